"""From what the user names (folder, file, hub id, ``toy``) to a loaded model: resolution, files, hashes."""
