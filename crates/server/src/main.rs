//! `agentbox`: thin entry point; see `agentbox_server::cli`.

fn main() -> std::process::ExitCode {
    agentbox_server::cli::main()
}
