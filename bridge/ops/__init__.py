"""The running service seen from outside: operations, the control page, metrics, sd_notify,
reload, the status view and the systemd installer."""
