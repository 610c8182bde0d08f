"""The systemd side: the D-Bus client, unit properties, a user's slice,
the operations the broker module runs on its workers, and the read-back of
what the kernel enforces."""
