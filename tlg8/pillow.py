"""TLG8 for Pillow: `import tlg8.pillow` registers the format for open and save, once.

    import tlg8.pillow
    from PIL import Image
    im = Image.open("photo.tlg8")                 # mode RGB or RGBA, Pillow's channel order
    im.save("copy.tlg8")                          # the shipped model, <= 16 trials per block
    im.save("copy.tlg", format="TLG8", search="reference", max_trials=16)

Files are recognised by their signature (the TLG8 magic, or the TLG0 "sds" container that
wraps it), not by their name; the extensions .tlg8 and .tlg are registered for saving. A
file with four components opens as RGBA (alpha kept even when it is all 255), three as RGB.
Save parameters: `search` ("model", "reference" or "exhaustive", see tlg8.codec),
`effort` (1-5, default 3), `max_trials` and `jobs` (processes; the same file for any).
Modes other than RGB and RGBA are converted first (L, P, LA, ... -> RGB(A)).
"""
import numpy as np
from PIL import Image, ImageFile

from . import Tlg8Error
from .codec import DEFAULT_EFFORT, encode_samples, from_tlg8_order, to_tlg8_order
from .tlgfile import HEADER_SIZE, MAGIC, SDS_MAGIC, TABLE_SIZE, decode_tlg8, read_header

FORMAT = "TLG8"
EXTENSIONS = (".tlg8", ".tlg")


def _accept(prefix):
    return prefix[:len(MAGIC)] == MAGIC or (prefix[:len(SDS_MAGIC)] == SDS_MAGIC and
                                            prefix[len(SDS_MAGIC) + 4:][:len(MAGIC)] == MAGIC)


class Tlg8ImageFile(ImageFile.ImageFile):
    format = FORMAT
    format_description = "TLG8 lossless image (KiriKiri)"

    def _open(self):
        head = self.fp.read(len(SDS_MAGIC) + 4 + HEADER_SIZE + TABLE_SIZE)
        if not _accept(head):
            raise SyntaxError("not a TLG8 file")
        try:
            info = read_header(head)
        except Tlg8Error as e:
            raise SyntaxError(str(e)) from None
        self._size = (info["width"], info["height"])
        self._mode = "RGBA" if info["ncomp"] == 4 else "RGB"
        self.tile = [(FORMAT, (0, 0) + self.size, 0, None)]

    def load_seek(self, pos):       # the decoder reads the whole file itself
        self.fp.seek(pos)


class Tlg8Decoder(ImageFile.PyDecoder):
    _pulls_fd = True

    def decode(self, buffer):
        self.fd.seek(0)
        try:
            samples, ncomp, _ = decode_tlg8(self.fd.read())
        except Tlg8Error as e:
            raise OSError(f"broken TLG8 file: {e}") from None
        rgb = from_tlg8_order(samples, ncomp)
        self.set_as_raw(rgb.tobytes(), self.mode)
        return -1, 0


def _save(im, fp, filename):
    options = im.encoderinfo
    if im.mode not in ("RGB", "RGBA"):
        alpha = "A" in im.getbands() or "transparency" in im.info
        im = im.convert("RGBA" if alpha else "RGB")
    data = encode_samples(to_tlg8_order(np.asarray(im)), options.get("search", "model"),
                          max_trials=options.get("max_trials"), jobs=options.get("jobs", 1),
                          effort=options.get("effort", DEFAULT_EFFORT))
    fp.write(data)


Image.register_open(FORMAT, Tlg8ImageFile, _accept)
Image.register_decoder(FORMAT, Tlg8Decoder)
Image.register_save(FORMAT, _save)
Image.register_extensions(FORMAT, list(EXTENSIONS))
Image.register_mime(FORMAT, "image/x-tlg8")
