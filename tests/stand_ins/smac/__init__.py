"""Stand-in for oxwhirl's smac (tests/stand_ins/README.md): `smac.env.StarCraft2Env` and the map registry."""
