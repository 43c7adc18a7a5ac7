import sys

try:
    from .cli import main
    sys.exit(main())
except KeyboardInterrupt:          # Ctrl-C before main() installed its own handling
    print("llmzip: interrupted", file=sys.stderr)
    sys.exit(130)
