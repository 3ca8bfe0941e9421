"""Reading images into the sample buffer the TLG8 encoder sees, and cutting it into blocks.

Spec: ../shared/spec/tlg8_block_cost.md §1 (channel order, component count, tiles, blocks,
padded workspace).
"""
import os

import numpy as np

from . import Tlg8Error

TILE_W = 8192
TILE_H = 80
BLOCK = 8


class ImageError(Tlg8Error):
    """An input image cannot be read; the message names the file and the reason."""


def _bmp_info(path, head):
    """Check the BMP header for the variants the reference reads (24/32-bit BI_RGB)."""
    if len(head) < 30:
        raise ImageError(f"{path}: truncated BMP header ({len(head)} bytes)")
    bpp = int.from_bytes(head[28:30], "little")
    comp = int.from_bytes(head[30:34], "little") if len(head) >= 34 else 0
    if bpp not in (24, 32) or comp != 0:
        raise ImageError(f"{path}: unsupported BMP variant ({bpp} bits per pixel, "
                         f"compression {comp}); only 24- and 32-bit uncompressed BMP are read")
    width = int.from_bytes(head[18:22], "little", signed=True)
    height = int.from_bytes(head[22:26], "little", signed=True)
    if width == 0 or height == 0:
        raise ImageError(f"{path}: image has zero width or height ({width} x {abs(height)})")
    return bpp


def read_image(path, pixel_format="auto"):
    """Return (samples, C): samples is a uint8 array (H, W, C) in TLG8 component order.

    C = 3: R, G, B.  C = 4: A, R, G, B.  `pixel_format` is "auto" (C = 4 only when the
    file has alpha and some A != 255), "R8G8B8" (force 3) or "A8R8G8B8" (force 4).
    """
    from PIL import Image, UnidentifiedImageError

    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as e:
        raise ImageError(f"{path}: cannot open ({e.strerror or e})") from None
    has_alpha_channel = None
    if head[:2] == b"BM":
        has_alpha_channel = _bmp_info(path, head) == 32
    elif head[:8] != b"\x89PNG\r\n\x1a\n":
        raise ImageError(f"{path}: not a BMP or PNG file")
    try:
        with Image.open(path) as im:
            im.load()
            if has_alpha_channel is None:      # PNG: always a 4-channel buffer (spec §1.1)
                has_alpha_channel = True
                rgba = np.asarray(im.convert("RGBA"))
            elif has_alpha_channel:
                # Pillow reads a 32-bit BI_RGB BMP as RGB (it treats the 4th byte as
                # padding); the reference keeps it as alpha, so read the raw bytes.
                rgba = _read_bmp32(path)
            else:
                rgba = np.asarray(im.convert("RGB"))
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"{path}: cannot decode image ({e})") from None
    if rgba.shape[0] == 0 or rgba.shape[1] == 0:
        raise ImageError(f"{path}: image has zero width or height")
    if rgba.shape[2] == 3:
        argb = None
        rgb = rgba
    else:
        argb = np.concatenate([rgba[..., 3:4], rgba[..., :3]], axis=2)
        rgb = rgba[..., :3]
    if pixel_format == "R8G8B8":
        return np.ascontiguousarray(rgb), 3
    if pixel_format == "A8R8G8B8":
        if argb is None:
            argb = np.concatenate([np.full(rgb.shape[:2] + (1,), 255, np.uint8), rgb], axis=2)
        return np.ascontiguousarray(argb), 4
    if pixel_format != "auto":
        raise ValueError(f"pixel_format must be auto, R8G8B8 or A8R8G8B8, not {pixel_format!r}")
    if argb is not None and (argb[..., 0] != 255).any():
        return np.ascontiguousarray(argb), 4
    return np.ascontiguousarray(rgb), 3


def _read_bmp32(path):
    """Decode a 32-bit BI_RGB BMP keeping the 4th byte as alpha (B,G,R,A bytes)."""
    with open(path, "rb") as f:
        data = f.read()
    off = int.from_bytes(data[10:14], "little")
    width = int.from_bytes(data[18:22], "little", signed=True)
    height = int.from_bytes(data[22:26], "little", signed=True)
    if width <= 0 or height == 0:
        raise ImageError(f"{path}: image has zero or negative width or height")
    rows = abs(height)
    need = off + width * rows * 4
    if len(data) < need:
        raise ImageError(f"{path}: truncated BMP pixel data ({len(data)} of {need} bytes)")
    bgra = np.frombuffer(data, np.uint8, width * rows * 4, off).reshape(rows, width, 4)
    if height > 0:                       # bottom-up
        bgra = bgra[::-1]
    return bgra[..., [2, 1, 0, 3]]


def block_grid(width, height):
    """Blocks of a W x H image in TLG8 block order (spec §1.2-1.3).

    Returns an int64 array (N, 6): tile_x, tile_y, block_x, block_y (absolute), w, h.
    """
    out = []
    for oy in range(0, height, TILE_H):
        th = min(TILE_H, height - oy)
        for ox in range(0, width, TILE_W):
            tw = min(TILE_W, width - ox)
            for by in range(0, th, BLOCK):
                for bx in range(0, tw, BLOCK):
                    out.append((ox, oy, ox + bx, oy + by, min(BLOCK, tw - bx), min(BLOCK, th - by)))
    return np.array(out, dtype=np.int64).reshape(-1, 6)


def block_batches(grid, chunk=None):
    """Index arrays into `grid` of blocks of one size, at most `chunk` each (all blocks of
    a size when None); sizes in a fixed order. What every batched stage iterates over:
    block_workspaces and the batched cost model take blocks of one size."""
    sizes = grid[:, 4] * 16 + grid[:, 5]
    for size in np.unique(sizes).tolist():
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
    ws = np.empty((len(grid), h + 1, w + 2, ncomp), np.int32)
    padded = {}
    for i, (ox, oy, bx, by, _, _) in enumerate(grid.tolist()):
        tile = padded.get((ox, oy))
        if tile is None:
            # A zero border around each tile makes "outside the tile" a plain array read.
            tw = min(TILE_W, width - ox)
            th = min(TILE_H, height - oy)
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
