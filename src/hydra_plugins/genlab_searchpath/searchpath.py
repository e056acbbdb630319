"""Adds genlab's configs to Hydra's search path while a `genlab` command composes (see genlab.config).

With `-cp DIR -cn NAME` the primary config comes from the user's folder; without this, its defaults list could
not name `train` or any genlab option unless the user added `hydra.searchpath=[...]` themselves. Other Hydra
apps installed beside genlab are left alone: the plugin acts only when `genlab.config.composing` is set.
"""

import sys

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class GenlabSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        config = sys.modules.get("genlab.config")  # imported by the genlab command before Hydra runs
        if config is None or not getattr(config, "composing", False):
            return
        present = {entry.path for entry in search_path.get_path()}
        for path in config.search_path():
            if path not in present:  # a plain `genlab train` has the packaged configs as its main path
                search_path.append(provider="genlab", path=path)
