"""`python -m vipcheck.node_reader`: vipcheck-node, run by a given interpreter (local://)."""

from vipcheck.node_reader.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
