MAPS = {"3m": {"n_agents": 2, "n_enemies": 1, "limit": 12}, "2m_vs_1z": {"n_agents": 2, "n_enemies": 1, "limit": 12}}


def get_smac_map_registry() -> dict:
    return MAPS
