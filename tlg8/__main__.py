"""The `tlg8` command (also `python3 -m tlg8`): one front end per subcommand.

    tlg8 encode photo.png                 # -> photo.tlg8, the shipped model
    tlg8 decode photo.tlg8                # -> photo.png
    tlg8 info photo.tlg8
    tlg8 dump images/*.png --out data.jsonl.gz
    tlg8 evaluate --model M.npz held_out.png
    tlg8 synth DIR
"""
import importlib
import sys

from . import __version__

COMMANDS = {
    "encode": ("encode", "encode PNG/BMP images to .tlg8"),
    "decode": ("decode", "decode .tlg8 files to PNG/BMP"),
    "info": ("info", "show the header, tiles, stream modes and choices of .tlg8 files"),
    "dump": ("dump", "write training records like tlgconv --tlg8-dump-training"),
    "evaluate": ("evaluate", "measure a model against the reference search in real bits"),
    "synth": ("synth", "write the project's synthetic test images"),
}


def usage():
    lines = ["usage: tlg8 COMMAND [ARGS...]   (tlg8 COMMAND --help for its options)", "",
             "commands:"]
    lines += [f"  {name:<9} {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "  --version  print the version"]
    return "\n".join(lines)


def main(argv=None):
    """Run a command; argv None: this process's own arguments (the `tlg8` program, whose
    process ends after the command)."""
    program = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"tlg8 {__version__}")
        return 0
    if argv[0] not in COMMANDS:
        print(f"tlg8: unknown command {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    from .cli import one_blas_thread
    one_blas_thread()
    module = importlib.import_module(f"tlg8.{COMMANDS[argv[0]][0]}")
    status = module.main(argv[1:], prog=f"tlg8 {argv[0]}")
    if program:
        from .cli import skip_final_collection
        skip_final_collection()
    return status


if __name__ == "__main__":
    sys.exit(main())
