import sys

try:
    from .commands import main
except KeyboardInterrupt:  # Ctrl-C while the command line is still importing
    print("coopnets: interrupted (Ctrl-C) while starting; nothing was done", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
