"""Plain torch networks; none of them knows Lightning."""


def check_sizes(where: str, **sizes: object) -> None:
    """Refuse a size that is not a positive integer, naming its config key (`model.net.latent_dim=-1`)
    instead of failing later inside torch ("negative dimension -2")."""
    from genlab.errors import ConfigError

    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{where}.{name}={value!r}: must be a positive integer")
