"""`layerpilot rewards`: the reward functions a spec can name."""

from __future__ import annotations

from cli.base import App
from cli.console import emit, guarded, out, say
from cli.options import JsonOpt
from cli.tables import plain_table
from service.rewards.registry import available_rewards

app = App()


@app.command()
@guarded
def rewards(*, as_json: JsonOpt = False) -> None:
    """List the registered reward functions."""
    found = available_rewards()

    def render() -> None:
        table = plain_table("name", "what it scores")
        for name, doc in found.items():
            table.add_row(name, doc)
        out.print(table)
        say("Name your own as module:function (it receives completions and every dataset column).")

    emit({"rewards": found}, as_json=as_json, render=render)
