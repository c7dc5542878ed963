"""The schemes' app factory for the `deployment` engine (a real Flower federation).

There the ServerApp and each ClientApp run in processes Flower starts, which import the pair by
name; `scheme_apps` is that name. Every scheme already carries its whole setup as one JSON string
in ``run_config["mupriv-setup"]`` (see `baselines.setup`), and the deployment engine writes the
run_config into the FAB's ``[tool.flwr.app.config]``, so the setup travels inside the app bundle
itself: a SuperNode on another machine needs no file from the server to rebuild the same apps.
"""
from __future__ import annotations

import json
from typing import Any

from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

from baselines.registry import get_scheme
from baselines.setup import SETUP_KEY, SchemeSetup

SCHEME_APPS = "baselines.deploy:scheme_apps"


def scheme_apps(run_config: dict[str, Any]) -> tuple[ServerApp, ClientApp]:
    """``get_scheme(name).apps(setup)`` with the setup read back from the run_config."""
    setup = SchemeSetup(**json.loads(str(run_config[SETUP_KEY])))
    return get_scheme(setup.scheme).apps(setup)
