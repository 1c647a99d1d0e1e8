"""Other Lumiku apps' events drive removals; per-user settings; completion e-mails.

`rules` is pure (event + setting -> request or a reason to skip); `intake` turns
decoded events into requests for the pipeline's intake; `store` keeps the settings
in PostgreSQL; `notify` and `mailer` send the completion e-mails.
"""
