"""Third-party sndif peers, built from the shared, unmodified source tarballs into a cache
outside the repository (their code is never copied in): :mod:`harness.peers.snd_be`."""
