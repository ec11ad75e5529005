"""The one class-name placeholder of basic_tf templates: `{c}`.

Training caption templates (`caption_templates.templates`, basic_tf/data/sources.py) and
zero-shot prompt templates (basic_tf/zeroshot, the export's classify signatures) both write the
class name as `{c}`: 'a photo of a {c}.'. The Python-format `{}` used by caption templates before
is still accepted, read as `{c}` with a warning that says so. Filling is plain text
replacement (never str.format), so names with braces, backslashes or '$' go in verbatim.
"""
from absl import logging

PLACEHOLDER = "{c}"
OLD_PLACEHOLDER = "{}"
_warned = set()


def normalize_template(template: str, where: str) -> str:
    """`template` with its class placeholder as '{c}'; '{}' is accepted and rewritten (with one
    warning per template). Raises ValueError naming `where` when there is no placeholder."""
    if not isinstance(template, str):
        raise ValueError(f"{where}={template!r} must be a string such as 'a photo of a {{c}}.'")
    if PLACEHOLDER in template:
        return template
    if OLD_PLACEHOLDER in template:
        fixed = template.replace(OLD_PLACEHOLDER, PLACEHOLDER)
        if template not in _warned:
            _warned.add(template)
            logging.warning("%s=%r uses '{}' for the class name; basic_tf's placeholder is '{c}' "
                            "(caption and prompt templates alike): read as %r", where, template,
                            fixed)
        return fixed
    raise ValueError(f"{where}={template!r} has no {PLACEHOLDER!r} placeholder for the class "
                     "name, e.g. 'a photo of a {c}.'")


def fill(template: str, class_name: str) -> str:
    """The template with every '{c}' replaced by `class_name` (verbatim)."""
    return template.replace(PLACEHOLDER, class_name)
