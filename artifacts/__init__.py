"""Model artifacts: build one with the optimize pipeline and keep it in a content-addressed store.

Plain Python, never Pulumi: this runs inside the OptimizedModel dynamic provider, in the process the
engine starts for it (`build`), and the program reads the store with it (`store`). No torch at import.
`engine_log` sends a build's progress to the engine over its wire protocol (the SDK's gRPC stubs).
"""
