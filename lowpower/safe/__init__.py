"""The shared rules for the user's files and input: nothing of theirs is overwritten or executed.

- ``load``: every weight file a command reads (checkpoints, pretrained backbones, imported weights,
  teachers, ``--resume``, ``init_from``) goes through ``load_weights``: ``weights_only=True``, the
  expected hash where one is known, one line naming the file when it is refused.
- ``write``: every file a command writes goes through ``check_output`` (not one of the inputs, not
  over an existing file without ``--force``, not onto a folder) and ``atomic_output`` (a temporary
  file in the same folder, renamed into place, with the mode other files get).
- ``bounds``: numeric command-line arguments with limits that say why.

``UserError`` is the base of the refusals these rules raise; ``lowpower``'s dispatcher prints one as
one line (``lowpower <command>: error: ...``) and exits 1, as it does a failed read or write (OSError).
"""


class UserError(Exception):
    """Bad input from the user, refused with a one-line message that names the file and the fix."""
