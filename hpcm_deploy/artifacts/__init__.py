"""What exports and engine builds leave on disk, described and checked: the export manifest, the engine manifest,
and the shapes and sizes both cover. Depends only on the configuration and the coding program, so that backends,
the codec and the tools that produce these artifacts can all read them."""
