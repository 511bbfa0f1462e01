"""What the tools ship and run on top of the library: the embedded demo models and their default export
(:mod:`.bundled`), and the demo that codes the sample image with them (:mod:`.demo`)."""
