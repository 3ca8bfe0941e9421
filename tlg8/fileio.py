"""Writing output files all at once (the one place for it)."""
import os
import tempfile


def atomic_write(path, write):
    """Create `path` all at once: write(tmp) fills a temporary file in the same directory,
    which then replaces `path`; on any failure the temporary file is removed and `path`
    is left as it was."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=directory)
    os.close(fd)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)        # mkstemp makes 0600; give the usual mode
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_file(path, mode, write):
    """atomic_write with an open file: write(f) fills the file object (mode "w" or "wb")."""
    def fill(tmp):
        with open(tmp, mode) as f:
            write(f)
    atomic_write(path, fill)
