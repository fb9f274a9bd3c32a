use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    omnistock::telemetry::init();
    let cli = omnistock::cli::Cli::parse();
    let outcome = omnistock::cli::run(cli).await;
    omnistock::telemetry::shutdown().await;
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("omnistock: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
