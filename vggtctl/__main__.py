import sys

try:
    from vggtctl.cli.app import main
except KeyboardInterrupt:  # Ctrl-C while the CLI itself is still being imported
    sys.stderr.write("Error: interrupted\nHint: nothing was done yet; re-run the same command\n")
    sys.exit(130)

if __name__ == "__main__":
    main()
