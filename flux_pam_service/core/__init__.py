"""The core: formats and per-user state, with the standard library only.

Nothing here imports Flux or systemd: the configuration, Flux's encodings
(FSD durations, idsets, Rv1, job IDs), the per-user job table and the root
lock directory shared with pam_flux.
"""
