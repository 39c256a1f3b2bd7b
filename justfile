# The recipes the PingPong tutorial (distributed-pingpong.txt) names, run
# from this directory: `just avm demo-beta` in one terminal, then
# `just avm demo-alpha` in another. The names alpha and beta must resolve
# (see the README's "The demo in two terminals").

# Runs one of the recipes below: `just avm demo-beta`.
avm recipe:
    @{{just_executable()}} --justfile {{justfile()}} {{recipe}}

# Terminal 1: beta hosts pong and serves until Ctrl-C.
demo-beta:
    RUST_LOG=info cargo run -p avm-node -- --name beta --port 9002 --peer alpha:9001 --demo

# Terminal 2: alpha hosts ping, runs the orchestrator, prints the result and exits.
demo-alpha:
    RUST_LOG=info cargo run -p avm-node -- --name alpha --port 9001 --peer beta:9002 --demo --rounds 3
