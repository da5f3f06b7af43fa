"""The command line's operator commands and the development stack (``python -m service``)."""
