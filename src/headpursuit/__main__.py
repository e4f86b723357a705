"""``python -m headpursuit``: the command line, also for launchers that take a module.

``accelerate launch -m headpursuit capture ...`` and ``torchrun -m headpursuit capture ...``
start one process per GPU this way.
"""

from .cli import app

if __name__ == "__main__":
    app(prog_name="headpursuit")
