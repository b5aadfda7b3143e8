from smac.env.starcraft2.maps.smac_maps import get_smac_map_registry


def get_map_params(map_name: str) -> dict:
    return get_smac_map_registry()[map_name]  # KeyError for an unknown map, as smac's
