"""A run's world, built and torn down in one place: platform, audio host, backend under
test, toolstack device, connected reference frontend (:mod:`harness.world.world`)."""
