# -*- test-case-name: tests.unit.test_image_formats -*-
"""The one error of image parsing: the file is not a usable image."""


class ImageFormatError(ValueError):
    """An image file that cannot be used; the message is what the client sees."""
