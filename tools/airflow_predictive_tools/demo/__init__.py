"""The main job on embedded defaults (`make demo`) and the generated organisation history it profiles."""
