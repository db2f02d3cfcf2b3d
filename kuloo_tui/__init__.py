"""kuloo_tui: the Textual admin UI. Talks to the daemon only through the control protocol;
imports neither trio nor tortoise."""
