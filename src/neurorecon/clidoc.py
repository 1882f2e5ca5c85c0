"""Write docs/cli.md from the command line itself, so that the reference cannot drift from it.

Run ``python -m neurorecon.clidoc > docs/cli.md`` after changing a command; tests/test_cli.py
fails while docs/cli.md differs from what this prints.
"""

from __future__ import annotations

import inspect

HEADER = """# The `neurorecon` command line

Generated from the commands themselves by `python -m neurorecon.clidoc > docs/cli.md`
(tests/test_cli.py checks that it is up to date); `neurorecon COMMAND --help` says the same.

Conventions, the same in every command:

* the inputs a command works on are its arguments; its main output is `-o/--out`
  (`convert SRC DST` still works, with a warning: DST as a second argument is deprecated);
  `review` reads and writes its decisions file, so that is `--review REVIEW.json`, not `-o`;
* `--json FILE` and `--html DIR` write reports, replaced on a rerun (`--json -` prints the JSON
  instead of the table); an existing main output is replaced only with `--overwrite`, and an
  input never is (except by `fix` and `apply` with `--overwrite`, which say so);
* the image a trace was traced in is `--image` (`detect`, `review`); the volumes `view` shows are
  what it is about, so they are its arguments;
* `--format` is a volume format (`convert`; `synth-em`: tif or zarr); `synth` writes its images as `--image-format`;
* every output is checked to be writable before the work starts: a read-only folder, a folder
  where a file is wanted or an existing output is one line on stderr and exit code 2;
* Ctrl-C at any moment ends a command with one line, `neurorecon: interrupted`, and exit code 130,
  leaving no partial output behind (`convert` resumes where it stopped when run again); once
  `review` or `view` prints its URL, Ctrl-C is how it stops (exit code 0);
* `neurorecon --version` prints the version.
"""


def render() -> str:
    """docs/cli.md: the conventions, then every command's usage, arguments, options and exit codes."""
    import click

    from .cli import command

    group = command()
    root = click.Context(group, info_name="neurorecon")
    parts = [HEADER, "## neurorecon\n", _usage(group, root), *_params(group, root, click), ""]
    for name, cmd in group.commands.items():
        ctx = click.Context(cmd, info_name=name, parent=root)
        parts += [f"## neurorecon {name}\n", _usage(cmd, ctx), inspect.cleandoc(cmd.help or "") + "\n"]
        parts += _params(cmd, ctx, click)
        if cmd.epilog:
            parts.append(cmd.epilog + "\n")
    return "\n".join(parts).rstrip() + "\n"


def _usage(cmd, ctx) -> str:
    return f"```\n{ctx.command_path} {' '.join(cmd.collect_usage_pieces(ctx))}\n```\n"


def _params(cmd, ctx, click) -> list[str]:
    out = []
    for title, kind in (("Arguments", click.Argument), ("Options", click.Option)):
        rows = [p.get_help_record(ctx) for p in cmd.get_params(ctx) if isinstance(p, kind)]
        rows = [r for r in rows if r is not None]
        if rows:
            out.append(f"{title}:\n")
            out += [f"* `{name}`: {text}" if text else f"* `{name}`" for name, text in rows]
            out.append("")
    return out


if __name__ == "__main__":
    print(render(), end="")
