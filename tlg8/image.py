"""Reading images into the sample buffer the TLG8 encoder sees, and cutting it into blocks.

Spec: ../shared/spec/tlg8_block_cost.md §1 (channel order, component count, tiles, blocks,
padded workspace).
"""
import os
import zlib

import numpy as np

from . import Tlg8Error, jit

TILE_W = 8192
TILE_H = 80
BLOCK = 8


# Largest image read_image accepts (W * H; 4096 x 4096), checked from the header before any
# pixel is decoded, so that a small file claiming a huge size costs nothing. Reading an RGBA
# PNG of this size peaks at ~210 MB (Pillow's buffer, the array and the channel reorder, about
# 12.5 bytes per pixel) in under a second. Callers with more memory pass max_pixels.
MAX_PIXELS = 1 << 24

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour type -> (name, allowed bit depths, samples per pixel).
_PNG_TYPES = {
    0: ("greyscale", (1, 2, 4, 8, 16), 1),
    2: ("RGB", (8, 16), 3),
    3: ("palette", (1, 2, 4, 8), 1),
    4: ("greyscale with alpha", (8, 16), 2),
    6: ("RGBA", (8, 16), 4),
}
# (colour type, bit depth) -> the Pillow modes whose samples _png_rgba knows how to map.
# Pillow strips 16-bit RGB(A)/LA to the high byte itself (and decodes 16-bit LA as RGBA);
# 16-bit greyscale stays 16-bit ("I;16", "I" in older versions) and is shifted here.
_PILLOW_MODES = {(0, 1): ("1",), (0, 2): ("L",), (0, 4): ("L",), (0, 8): ("L",),
                 (0, 16): ("I;16", "I"), (2, 8): ("RGB",), (2, 16): ("RGB",),
                 (3, 1): ("P",), (3, 2): ("P",), (3, 4): ("P",), (3, 8): ("P",),
                 (4, 8): ("LA",), (4, 16): ("LA", "RGBA"), (6, 8): ("RGBA",),
                 (6, 16): ("RGBA",)}
_READ_PIECE = 1 << 20        # chunk bodies are checked in pieces of this size


class ImageError(Tlg8Error):
    """An input image cannot be read; the message names the file and the reason."""


def _check_size(path, width, height, max_pixels):
    if width == 0 or height == 0:
        raise ImageError(f"{path}: image has zero width or height ({width} x {height})")
    if width < 0:
        raise ImageError(f"{path}: image has a negative width ({width})")
    if width * height > max_pixels:
        raise ImageError(f"{path}: image is {width} x {height} = {width * height} pixels, "
                         f"more than the limit of {max_pixels} (max_pixels)")


def _read_bmp(path, f, size, max_pixels):
    """Decode a 24- or 32-bit BI_RGB BMP as the reference does (spec §1.1): (H, W, 3) R, G, B
    or (H, W, 4) R, G, B, A. Pillow is not used: it reads the 32-bit 4th byte as padding."""
    head = f.read(54)
    if len(head) < 54:
        raise ImageError(f"{path}: truncated BMP header ({len(head)} of 54 bytes)")
    offset = int.from_bytes(head[10:14], "little")
    header_size = int.from_bytes(head[14:18], "little")
    width = int.from_bytes(head[18:22], "little", signed=True)
    height = int.from_bytes(head[22:26], "little", signed=True)
    bpp = int.from_bytes(head[28:30], "little")
    comp = int.from_bytes(head[30:34], "little")
    if header_size < 40:
        raise ImageError(f"{path}: unsupported BMP header of {header_size} bytes "
                         "(OS/2 or unknown); only BITMAPINFOHEADER (40 bytes) or later is read")
    if bpp not in (24, 32) or comp != 0:
        raise ImageError(f"{path}: unsupported BMP variant ({bpp} bits per pixel, "
                         f"compression {comp}); only 24- and 32-bit uncompressed BMP are read")
    # A negative height means top-down rows; a negative width has no meaning.
    _check_size(path, width, abs(height), max_pixels)
    rows = abs(height)
    if offset < 14 + header_size:
        raise ImageError(f"{path}: BMP pixel data offset {offset} points into the headers "
                         f"(they end at byte {14 + header_size})")
    stride = width * 4 if bpp == 32 else (width * 3 + 3) & ~3
    need = offset + stride * rows
    if size < need:
        raise ImageError(f"{path}: truncated BMP pixel data (the file has {size} bytes, "
                         f"{rows} rows of {stride} bytes from offset {offset} need {need})")
    f.seek(offset)
    data = np.fromfile(f, np.uint8, stride * rows).reshape(rows, stride)
    if height > 0:                       # bottom-up
        data = data[::-1]
    nchan = bpp // 8
    pixels = data[:, :width * nchan].reshape(rows, width, nchan)
    return pixels[..., [2, 1, 0, 3][:nchan]]      # B,G,R(,A) -> R,G,B(,A)


def _png_chunks(path, f):
    """Walk all chunks of a PNG, checking lengths and CRCs (libpng, which the reference
    uses, rejects a bad CRC; Pillow does not check IDAT's). Returns (IHDR fields, PLTE bytes
    or None, tRNS bytes or None). Reads the file once in bounded pieces."""
    ihdr = plte = trns = None
    seen_idat = False
    f.seek(len(_PNG_SIGNATURE))
    while True:
        head = f.read(8)
        if len(head) < 8:
            raise ImageError(f"{path}: truncated PNG (no IEND chunk)")
        length = int.from_bytes(head[:4], "big")
        kind = head[4:8]
        keep = kind in (b"IHDR", b"PLTE", b"tRNS")
        # The kept chunks are small (a full palette is 768 bytes); others are only checked.
        if length > (768 if keep else 0x7FFFFFFF):
            raise ImageError(f"{path}: PNG chunk {kind.decode('latin-1')!r} has an invalid "
                             f"length {length}")
        crc = zlib.crc32(kind)
        body = []
        left = length
        while left:
            piece = f.read(min(left, _READ_PIECE))
            if not piece:
                raise ImageError(f"{path}: truncated PNG (chunk {kind.decode('latin-1')!r} "
                                 f"ends early)")
            crc = zlib.crc32(piece, crc)
            left -= len(piece)
            if keep:
                body.append(piece)
        stored = f.read(4)
        if len(stored) < 4:
            raise ImageError(f"{path}: truncated PNG (chunk {kind.decode('latin-1')!r} "
                             "has no CRC)")
        if int.from_bytes(stored, "big") != crc:
            raise ImageError(f"{path}: PNG chunk {kind.decode('latin-1')!r} has a bad CRC "
                             "(the file is damaged)")
        body = b"".join(body)
        if ihdr is None and kind != b"IHDR":
            raise ImageError(f"{path}: PNG does not start with an IHDR chunk")
        if kind == b"IHDR":
            if len(body) != 13 or ihdr is not None:
                raise ImageError(f"{path}: invalid PNG IHDR chunk")
            ihdr = (int.from_bytes(body[0:4], "big"), int.from_bytes(body[4:8], "big"),
                    body[8], body[9], body[10], body[11], body[12])
        elif kind == b"PLTE" and not seen_idat:
            plte = body
        elif kind == b"tRNS" and not seen_idat:
            trns = body
        elif kind == b"IDAT":
            seen_idat = True
        elif kind == b"IEND":
            if not seen_idat:
                raise ImageError(f"{path}: PNG has no image data (no IDAT chunk)")
            return ihdr, plte, trns


def _png_header(path, f, max_pixels):
    """Check a PNG's structure and header before decoding; returns (colour type, depth,
    PLTE, tRNS)."""
    (width, height, depth, ctype, comp, filt, interlace), plte, trns = _png_chunks(path, f)
    if width > 0x7FFFFFFF or height > 0x7FFFFFFF:
        raise ImageError(f"{path}: invalid PNG size {width} x {height}")
    _check_size(path, width, height, max_pixels)
    if ctype not in _PNG_TYPES or depth not in _PNG_TYPES[ctype][1]:
        raise ImageError(f"{path}: invalid PNG colour type {ctype} with bit depth {depth}")
    if comp or filt or interlace > 1:
        raise ImageError(f"{path}: invalid PNG header (compression {comp}, filter {filt}, "
                         f"interlace {interlace})")
    name, _, spp = _PNG_TYPES[ctype]
    if ctype == 3:
        if plte is None or not plte or len(plte) % 3 or len(plte) > 3 << depth:
            raise ImageError(f"{path}: palette PNG without a valid PLTE chunk")
        if trns is not None and len(trns) > len(plte) // 3:
            raise ImageError(f"{path}: tRNS chunk has {len(trns)} entries for a palette of "
                             f"{len(plte) // 3}")
    elif trns is not None:
        if ctype in (4, 6) or len(trns) != 2 * spp:
            raise ImageError(f"{path}: invalid tRNS chunk for a {name} PNG")
        key = np.frombuffer(trns, ">u2")
        if (key >> depth).any():
            raise ImageError(f"{path}: tRNS colour {key.tolist()} does not fit {depth} bits")
        if depth == 16 and ctype == 2:
            # Pillow strips 16-bit RGB to 8 bits before the key could be compared.
            raise ImageError(f"{path}: 16-bit RGB PNG with a transparent colour (tRNS) "
                             "is not supported")
    return ctype, depth, plte, trns


def _png_rgba(path, im, ctype, depth, plte, trns):
    """The RGBA (H, W, 4) uint8 buffer libpng gives the reference for a decoded PNG (spec
    §1.1): 16 bits -> the high byte, grey and palette expanded, tRNS -> alpha, else 255."""
    if im.mode not in _PILLOW_MODES[ctype, depth]:
        raise ImageError(f"{path}: Pillow decoded the {depth}-bit {_PNG_TYPES[ctype][0]} PNG "
                         f"as mode {im.mode!r}, which is not supported")
    if ctype == 3:
        index = np.asarray(im)
        entries = len(plte) // 3
        if index.max(initial=0) >= entries:
            raise ImageError(f"{path}: a pixel uses palette entry {int(index.max())} of a "
                             f"palette with {entries} entries")
        table = np.full((256, 4), 255, np.uint8)
        table[:entries, :3] = np.frombuffer(plte, np.uint8).reshape(-1, 3)
        if trns is not None:
            table[:len(trns), 3] = np.frombuffer(trns, np.uint8)
        return table[index]
    if ctype == 0:
        grey = np.asarray(im)
        if depth == 16:
            raw = grey.astype(np.uint16)
            grey = (raw >> 8).astype(np.uint8)
        else:
            raw = grey = grey.astype(np.uint8) * np.uint8(255 if im.mode == "1" else 1)
        rgba = np.empty(grey.shape + (4,), np.uint8)
        rgba[..., :3] = grey[..., None]
        rgba[..., 3] = 255
        if trns is not None:
            # Pillow gives 1-, 2- and 4-bit grey already scaled to 0..255; so is the key.
            key = int.from_bytes(trns, "big")
            if depth < 8:
                key = key * 255 // ((1 << depth) - 1)
            rgba[raw == key, 3] = 0
        return rgba
    if ctype == 2:
        rgb = np.asarray(im)
        rgba = np.empty(rgb.shape[:2] + (4,), np.uint8)
        rgba[..., :3] = rgb
        rgba[..., 3] = 255
        if trns is not None:                 # 8-bit only (16-bit refused in _png_header)
            key = np.frombuffer(trns, ">u2").astype(np.uint8)
            rgba[(rgb == key).all(axis=2), 3] = 0
        return rgba
    if im.mode == "LA":
        la = np.asarray(im)
        rgba = np.empty(la.shape[:2] + (4,), np.uint8)
        rgba[..., :3] = la[..., :1]
        rgba[..., 3] = la[..., 1]
        return rgba
    return np.asarray(im)


def _read_png(path, f, max_pixels):
    from PIL import Image

    ctype, depth, plte, trns = _png_header(path, f, max_pixels)
    f.seek(0)
    try:
        with Image.open(f, formats=["PNG"]) as im:
            im.load()
            return _png_rgba(path, im, ctype, depth, plte, trns)
    except Image.DecompressionBombError as e:    # max_pixels above Pillow's own limit
        raise ImageError(f"{path}: {e}") from None
    except (OSError, ValueError, SyntaxError, EOFError, zlib.error) as e:
        raise ImageError(f"{path}: cannot decode PNG ({e})") from None


def read_image(path, pixel_format="auto", max_pixels=MAX_PIXELS):
    """Return (samples, C): samples is a uint8 array (H, W, C) in TLG8 component order.

    C = 3: R, G, B.  C = 4: A, R, G, B.  `pixel_format` is "auto" (C = 4 only when the
    file has alpha and some A != 255), "R8G8B8" (force 3) or "A8R8G8B8" (force 4).
    Reads 24/32-bit BI_RGB BMP and every PNG type (spec §1.1). Raises ImageError, naming the
    file and the reason, for anything else, a damaged file or more than `max_pixels` pixels.
    """
    if pixel_format not in ("auto", "R8G8B8", "A8R8G8B8"):
        raise ValueError(f"pixel_format must be auto, R8G8B8 or A8R8G8B8, not {pixel_format!r}")
    path = os.fspath(path)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise ImageError(f"{path}: cannot open ({e.strerror or e})") from None
    try:
        with f:
            size = os.fstat(f.fileno()).st_size
            magic = f.read(8)
            f.seek(0)
            if magic[:2] == b"BM":
                pixels = _read_bmp(path, f, size, max_pixels)
            elif magic == _PNG_SIGNATURE:
                pixels = _read_png(path, f, max_pixels)
            else:
                raise ImageError(f"{path}: not a BMP or PNG file")
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror or e})") from None
    # pixels: R, G, B or R, G, B, A (a 4-channel buffer, spec §1.1)
    if pixels.shape[2] == 4 and (pixel_format == "A8R8G8B8" or (
            pixel_format == "auto" and (pixels[..., 3] != 255).any())):
        return np.ascontiguousarray(pixels[..., [3, 0, 1, 2]]), 4
    if pixel_format == "A8R8G8B8":
        argb = np.empty(pixels.shape[:2] + (4,), np.uint8)
        argb[..., 0] = 255
        argb[..., 1:] = pixels
        return argb, 4
    return np.ascontiguousarray(pixels[..., :3]), 3


def block_grid(width, height, tile_h=TILE_H):
    """Blocks of a W x H image in TLG8 block order (spec §1.2-1.3), tiles of TILE_W x
    tile_h (the reference's 80 rows unless given; file spec §3.4 allows any).

    Returns an int64 array (N, 6): tile_x, tile_y, block_x, block_y (absolute), w, h.
    """
    out = [np.zeros((0, 6), np.int64)]
    for oy in range(0, height, tile_h):
        th = min(tile_h, height - oy)
        for ox in range(0, width, TILE_W):
            tw = min(TILE_W, width - ox)
            # Block rows top to bottom, blocks left to right: by is the slow index.
            by, bx = np.meshgrid(np.arange(0, th, BLOCK, dtype=np.int64),
                                 np.arange(0, tw, BLOCK, dtype=np.int64), indexing="ij")
            by, bx = by.ravel(), bx.ravel()
            out.append(np.stack([np.full_like(bx, ox), np.full_like(bx, oy), ox + bx, oy + by,
                                 np.minimum(BLOCK, tw - bx), np.minimum(BLOCK, th - by)],
                                axis=1))
    return np.concatenate(out)


def block_batches(grid, chunk=None):
    """Index arrays into `grid` of blocks of one size, at most `chunk` each (all blocks of
    a size when None); sizes in a fixed order. What every batched stage iterates over:
    block_workspaces and the batched cost model take blocks of one size."""
    sizes = grid[:, 4] * 16 + grid[:, 5]
    # (bincount rather than np.unique, whose first call imports numpy.ma)
    for size in np.flatnonzero(np.bincount(sizes)).tolist():
        index = np.flatnonzero(sizes == size)
        step = chunk or len(index)
        for lo in range(0, len(index), step):
            yield index[lo:lo + step]


def block_workspaces(samples, grid):
    """Padded neighbourhoods of the blocks in `grid`, all with one (w, h).

    Returns int32 (N, C, h+1, w+2): ws[n, c, y+1, x+1] = P_c(x, y) of spec §1.4, the sample if
    it lies inside the block's tile and 0 otherwise.
    """
    height, width, ncomp = samples.shape
    w = int(grid[0, 4])
    h = int(grid[0, 5])
    if not ((grid[:, 4] == w) & (grid[:, 5] == h)).all():
        raise ValueError("block_workspaces needs blocks of one size; group them first")
    if jit.available() and samples.dtype == np.uint8 and len(grid):
        from . import encode_kernels as kernels
        ws = np.empty((len(grid), ncomp, h + 1, w + 2), np.int32)
        # Tile height `height`: a workspace reads no row below its block, so only the
        # tile tops (in the grid) matter, whatever the tiles' height.
        kernels.workspaces(np.ascontiguousarray(samples),
                           np.ascontiguousarray(grid, np.int64), TILE_W, height, ws)
        return ws
    ws = np.empty((len(grid), h + 1, w + 2, ncomp), np.int32)
    # A workspace needs its tile's rows down to the block's own last one (prediction looks
    # up and left only), so the grid alone gives what to copy, whatever the tile height.
    bottom = {}
    for ox, oy, _, by, _, bh in grid.tolist():
        bottom[ox, oy] = max(bottom.get((ox, oy), 0), by + bh)
    padded = {}
    for i, (ox, oy, bx, by, _, _) in enumerate(grid.tolist()):
        tile = padded.get((ox, oy))
        if tile is None:
            # A zero border around each tile makes "outside the tile" a plain array read.
            tw = min(TILE_W, width - ox)
            th = bottom[ox, oy] - oy
            tile = np.zeros((th + 1, tw + 2, ncomp), np.int32)
            tile[1:, 1:tw + 1] = samples[oy:oy + th, ox:ox + tw]
            padded = {(ox, oy): tile}          # blocks come tile by tile: keep one
        lx = bx - ox
        ly = by - oy
        ws[i] = tile[ly:ly + h + 1, lx:lx + w + 2]
    return ws.transpose(0, 3, 1, 2).copy()


def block_pixels(samples, grid_row):
    """The block's own samples, (h, w, C) uint8, as stored in the JSONL `pixels` field."""
    _, _, bx, by, w, h = (int(v) for v in grid_row)
    return samples[by:by + h, bx:bx + w]
