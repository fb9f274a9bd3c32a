use clap::Parser;

// A request allocates and frees many small buffers across worker threads; glibc malloc spent
// 18 % of a cached read's CPU doing it (docs/profiles.md, "Reads").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
