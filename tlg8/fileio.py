"""Writing output files all at once (the one place for it).

A temporary file beside the output takes the data and then replaces the output, so an
interrupted or failed run leaves the old output (or none), never a partial one. The
temporary name `.NAME.tlg8-tmp-PID-RANDOM` says which process made it: a later write of the
same output removes the ones whose process is gone (left by SIGKILL or a power cut).
"""
import glob
import os
import tempfile

TMP_TAG = ".tlg8-tmp-"


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(path):
    """Remove temporary files of `path` left by processes that no longer run."""
    directory, name = os.path.split(os.path.abspath(path))
    for tmp in glob.glob(os.path.join(glob.escape(directory),
                                      glob.escape("." + name + TMP_TAG) + "*")):
        pid = os.path.basename(tmp)[len(name) + 1 + len(TMP_TAG):].split("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            try:
                os.unlink(tmp)
            except OSError:
                pass


def atomic_write(path, write):
    """Create `path` all at once: write(tmp) fills a temporary file in the same directory,
    which then replaces `path`; on any failure (an interrupt included) the temporary file
    is removed and `path` is left as it was."""
    path = os.fspath(path)
    remove_stale(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}{TMP_TAG}{os.getpid()}-",
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


def check_writable(path):
    """OSError now, before any work, when `path` cannot be created or replaced: its
    directory is missing or not writable, or it is a directory."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(21, "is a directory", path)
    if not os.path.isdir(directory):
        raise FileNotFoundError(2, "no such directory", directory)
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(13, "directory not writable", directory)
