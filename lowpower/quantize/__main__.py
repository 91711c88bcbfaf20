"""``python -m lowpower.quantize SUBCOMMAND ...``: dispatch to ptq or study (see --help)."""
import importlib
import sys

PROG = "python -m lowpower.quantize"
# Subcommand -> (module, one-line summary); modules are imported only when their command runs.
SUBCOMMANDS = {
    "ptq": ("lowpower.quantize.ptq", "post-training static int8: fuse, calibrate, convert; writes int8_ptq.pt"),
    "study": ("lowpower.quantize.study", "fixed-point study: val mean Dice over weight/activation bit widths"),
}


def usage():
    """The top-level help text listing the subcommands."""
    lines = ["usage: %s {%s} ..." % (PROG, ",".join(SUBCOMMANDS)), "",
             "Quantize a trained checkpoint. Each subcommand has its own --help.", ""]
    lines += ["  %-6s %s" % (name, summary) for name, (_, summary) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv=None):
    """Run the subcommand named by ``argv[0]`` with the rest of ``argv``; returns the exit status.

    Example:
        >>> main(["ptq", "runs/demo/best.pt", "--calib", "32"])  # doctest: +SKIP
        0
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] not in SUBCOMMANDS:
        print("%s: error: unknown subcommand %r; choose one of: %s" % (PROG, argv[0], ", ".join(SUBCOMMANDS)),
              file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[argv[0]][0])
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
