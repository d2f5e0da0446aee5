"""Actor side: environment backends and the actor process (imports fpac_async, never learner)."""
