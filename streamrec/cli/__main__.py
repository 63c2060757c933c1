"""``python -m streamrec.cli``: the same as the ``streamrec`` command."""

from streamrec.cli import main

main()
