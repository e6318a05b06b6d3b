//! `gatehouse login` and `gatehouse token`: a person's sign-in on their own machine.

use std::process::ExitCode;

use anyhow::Context;

use gatehouse_identity::login::{self, LoginClient};
use gatehouse_identity::unix_now;

use crate::cli::LoginArgs;

pub(crate) async fn login(args: LoginArgs) -> anyhow::Result<ExitCode> {
    let path = login::token_path().map_err(anyhow::Error::msg)?;
    let issuer = issuer_url(&args)?;
    let client = LoginClient::discover(&issuer, &args.client_id)
        .await
        .map_err(anyhow::Error::msg)?;
    let tokens = if args.browser {
        let pending = client
            .start_browser(&args.scope)
            .await
            .map_err(anyhow::Error::msg)?;
        eprintln!("Open this link to sign in: {}", pending.url);
        eprintln!("Waiting for the browser to come back (up to 5 minutes)...");
        client
            .finish_browser(pending, std::time::Duration::from_secs(300), unix_now())
            .await
            .map_err(anyhow::Error::msg)?
    } else {
        device(&client, &args.scope).await?
    };
    login::save(&path, &tokens).map_err(anyhow::Error::msg)?;
    eprintln!(
        "Signed in at {}; the token is in {} (valid for {} s{})",
        tokens.issuer,
        path.display(),
        tokens.expires_at - unix_now(),
        if tokens.refresh_token.is_some() {
            ", refreshed by `gatehouse token` when it nears expiry"
        } else {
            ""
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// `--issuer` as given when it is a URL, else the issuer of that name in the config.
fn issuer_url(args: &LoginArgs) -> anyhow::Result<String> {
    if args.issuer.contains("://") {
        return Ok(args.issuer.clone());
    }
    let text = std::fs::read_to_string(&args.config).with_context(|| {
        format!(
            "--issuer {:?} is not a URL, and {} (where issuer names are looked up) cannot be read",
            args.issuer,
            args.config.display()
        )
    })?;
    let config = gatehouse_config::Config::parse_toml_str(&text, &args.config)?;
    config
        .issuers
        .iter()
        .find(|i| i.name == args.issuer)
        .map(|i| i.issuer.clone())
        .with_context(|| {
            let known: Vec<&str> = config.issuers.iter().map(|i| i.name.as_str()).collect();
            format!(
                "--issuer {:?}: no such issuer in {} (known: {})",
                args.issuer,
                args.config.display(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )
        })
}

async fn device(client: &LoginClient, scope: &str) -> anyhow::Result<login::TokenSet> {
    let start = client
        .start_device(scope)
        .await
        .map_err(anyhow::Error::msg)?;
    eprintln!(
        "To sign in, open {} and enter the code {}",
        start.verification_uri, start.user_code
    );
    if let Some(direct) = &start.verification_uri_complete {
        eprintln!("(or open {direct})");
    }
    eprintln!(
        "Waiting for the sign-in to be approved (up to {} s)...",
        start.expires_in
    );
    client
        .wait_for_approval(&start, unix_now())
        .await
        .map_err(anyhow::Error::msg)
}

pub(crate) async fn token() -> anyhow::Result<ExitCode> {
    outln!("{}", current_token().await?);
    Ok(ExitCode::SUCCESS)
}

/// The kept token, refreshed first when it nears expiry.
pub(crate) async fn current_token() -> anyhow::Result<String> {
    let path = login::token_path().map_err(anyhow::Error::msg)?;
    let mut tokens = login::load(&path).map_err(anyhow::Error::msg)?;
    let now = unix_now();
    if login::needs_refresh(&tokens, now) {
        let client = LoginClient::discover(&tokens.issuer, &tokens.client_id)
            .await
            .map_err(anyhow::Error::msg)?;
        tokens = client
            .refresh(&tokens, now)
            .await
            .map_err(anyhow::Error::msg)?;
        login::save(&path, &tokens).map_err(anyhow::Error::msg)?;
    }
    Ok(tokens.access_token)
}
