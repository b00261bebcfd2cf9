"""Sphinx extension of the API page: a module constant's value is shown only when it is short
and the same on every machine.

autodoc prints every constant's repr after its name; for tables such as the method registry or
COCO's category ids that is a screenful of text, and a path is the build machine's. Those values
are left to the constant's docstring and to the source.
"""

from pathlib import PurePath

from sphinx.ext.autodoc import DataDocumenter
from sphinx.util.inspect import object_description

LONGEST_VALUE = 80  # characters of repr shown after a constant's name


class ShortValueDataDocumenter(DataDocumenter):
    def should_suppress_value_header(self) -> bool:
        if super().should_suppress_value_header() or isinstance(self.object, PurePath):
            return True
        try:
            return len(object_description(self.object)) > LONGEST_VALUE
        except ValueError:
            return True


def setup(app):
    app.add_autodocumenter(ShortValueDataDocumenter, override=True)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
