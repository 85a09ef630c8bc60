"""``python -m liverec`` = the ``liverec`` command (useful when the script is not on PATH)."""

from liverec.cli import app

if __name__ == "__main__":
    app(prog_name="liverec")
