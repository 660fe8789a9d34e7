//! Every refusal the gateway makes, and the one place that maps each to an HTTP status, a
//! stable machine code (log lines, JSON errors) and a sentence a person can act on.

use std::fmt;

use crate::audit::AuditEvent;
use crate::oidc::{IdTokenError, OidcError};
use crate::ports::{FetchError, KvError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    UnknownHost(String),
    ConfigInvalid,
    /// The assertion signing key (by id) cannot sign: the public key its PKCS#8 document
    /// carries is not its private key's. Requests are refused rather than forwarded unsigned.
    SigningKeyUnusable(String),
    NotFound,
    MethodNotAllowed,
    BadRequest(String),
    /// A path origins could read differently from the gateway (`path.rs`).
    AmbiguousPath(crate::path::Ambiguity),
    UnknownProvider(String),
    Storage(KvError),
    Oidc {
        provider: String,
        error: OidcError,
    },
    /// The state a sign-in started with (OIDC `state`, SAML RelayState) and the browser
    /// that started it do not hold up: the same checks for every protocol.
    PreLogin {
        provider: String,
        error: PreLoginError,
    },
    /// A hand-off between a sign-in host and one of its sites did not hold up.
    Handoff(HandoffError),
    /// A provider's published documents (discovery, JWKS, SAML metadata) could not be had.
    ProviderUnavailable {
        provider: String,
        cause: String,
    },
    NoRoles,
    Forbidden {
        denied: crate::policy::Denied,
    },
    /// A bearer token was presented and not accepted (RFC 6750 3.1).
    Bearer(BearerError),
    OriginUnreachable(String),
    /// The origin sent no response headers within the tenant's `origin_timeout_ms`.
    OriginTimeout {
        after_ms: u64,
    },
    Csrf,
    /// A session needed the IdP (refresh) and it could not be reached.
    IdpUnavailable(String),
    /// The request needs the second factor first (or a more recent one).
    MfaRequired {
        step_up: bool,
    },
    /// Adding a second factor needs a fresh sign-in at the IdP, and the IdP did not confirm
    /// one (no recent `auth_time`).
    FreshSignInNotConfirmed {
        provider: String,
    },
    /// Too many wrong codes: the second factor is locked for a while.
    MfaLocked {
        minutes: u64,
    },
    AdminUnauthenticated,
    AdminForbidden,
    /// A SAML response failed verification (or carried a non-success status).
    Saml {
        connection: String,
        error: Box<crate::saml::response::SamlError>,
    },
    /// The same assertion was presented again.
    SamlReplay {
        connection: String,
    },
    /// Admin API input refused, with the precise reason.
    BadInput(String),
    UnknownUser,
    UnknownSession,
    /// Too many requests of one kind from one client; retry after that many seconds.
    RateLimited {
        retry_after: u64,
    },
}

/// Why the state a sign-in started with was not accepted, whatever the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreLoginError {
    /// The response carries no state (OIDC `state`, SAML RelayState).
    StateMissing,
    /// The state is unknown or expired.
    StateUnknown,
    /// The state was already consumed.
    StateReplayed,
    /// The pending-login cookie is absent or belongs to another sign-in.
    PendingCookieMissing,
    PendingCookieMismatch,
    /// The response came for a different provider than the sign-in started with.
    ProviderMismatch,
}

/// Why a sign-in host would not hand a session to a site, or a site would not take one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandoffError {
    /// The site (tenant id) is not one of the sign-in host's sites, or the host named is
    /// not that site's.
    NotMember { site: String, host: String },
    /// The code is unknown or expired.
    CodeUnknown,
    /// The code was already redeemed.
    CodeReplayed,
    /// The code was issued for another site, host or sign-in (its `state`).
    CodeMismatch(&'static str),
    /// The sign-in host's session ended between the code and its redemption.
    CentralEnded,
}

impl fmt::Display for HandoffError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandoffError::NotMember { site, host } => {
                write!(f, "site {site:?} at host {host:?} is not a site of this sign-in host")
            }
            HandoffError::CodeUnknown => f.write_str("hand-off code unknown or expired"),
            HandoffError::CodeReplayed => f.write_str("hand-off code already used"),
            HandoffError::CodeMismatch(what) => write!(f, "hand-off code issued for another {what}"),
            HandoffError::CentralEnded => f.write_str("the sign-in host's session has ended"),
        }
    }
}

impl fmt::Display for PreLoginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PreLoginError::StateMissing => "response without state",
            PreLoginError::StateUnknown => "login state unknown or expired",
            PreLoginError::StateReplayed => "login state already used",
            PreLoginError::PendingCookieMissing => "pending-login cookie missing",
            PreLoginError::PendingCookieMismatch => "pending-login cookie belongs to another login",
            PreLoginError::ProviderMismatch => "response for a different provider than the login",
        })
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::UnknownHost(h) => write!(f, "no tenant for host {h:?}"),
            Refusal::ConfigInvalid => f.write_str("configuration invalid"),
            Refusal::SigningKeyUnusable(id) => write!(
                f,
                "assertion signing key {id} is unusable: the public key in its PKCS#8 document is not its private key's"
            ),
            Refusal::NotFound => f.write_str("no such gateway route"),
            Refusal::MethodNotAllowed => f.write_str("method not allowed"),
            Refusal::BadRequest(e) => write!(f, "bad request: {e}"),
            Refusal::AmbiguousPath(why) => write!(f, "ambiguous path: {why}"),
            Refusal::UnknownProvider(p) => write!(f, "unknown provider {p:?}"),
            Refusal::Storage(e) => write!(f, "{e}"),
            Refusal::Oidc { provider, error } => write!(f, "provider {provider}: {error}"),
            Refusal::PreLogin { provider, error } => write!(f, "provider {provider}: {error}"),
            Refusal::Handoff(error) => write!(f, "sign-in hand-off: {error}"),
            Refusal::ProviderUnavailable { provider, cause } => write!(f, "provider {provider}: {cause}"),
            Refusal::NoRoles => f.write_str("no mapped group or role for this user"),
            Refusal::Forbidden { denied } => write!(f, "denied by {}", denied.label()),
            Refusal::Bearer(e) => e.fmt(f),
            Refusal::OriginUnreachable(e) => write!(f, "origin unreachable: {e}"),
            Refusal::OriginTimeout { after_ms } => write!(f, "origin did not answer within {after_ms} ms"),
            Refusal::Csrf => f.write_str("CSRF token missing or wrong"),
            Refusal::IdpUnavailable(e) => write!(f, "identity provider unavailable: {e}"),
            Refusal::MfaRequired { step_up: true } => f.write_str("recent second factor required (step-up)"),
            Refusal::MfaRequired { step_up: false } => f.write_str("second factor required"),
            Refusal::MfaLocked { minutes } => write!(f, "second factor locked for {minutes} more minutes"),
            Refusal::FreshSignInNotConfirmed { provider } => {
                write!(f, "provider {provider} did not confirm a fresh sign-in (auth_time missing or old)")
            }
            Refusal::AdminUnauthenticated => f.write_str("admin API: no or wrong credentials"),
            Refusal::AdminForbidden => f.write_str("admin API: caller is not an admin"),
            Refusal::BadInput(e) => write!(f, "bad input: {e}"),
            Refusal::UnknownUser => f.write_str("unknown user"),
            Refusal::UnknownSession => f.write_str("unknown session"),
            Refusal::RateLimited { retry_after } => {
                write!(f, "too many sign-in starts from this client (retry after {retry_after} s)")
            }
            Refusal::Saml { connection, error } => write!(f, "SAML connection {connection}: {error}"),
            Refusal::SamlReplay { connection } => {
                write!(f, "SAML connection {connection}: assertion already used (replay)")
            }
        }
    }
}

/// Why a bearer token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BearerError {
    /// The token's (unverified) `iss` is none of the tenant's bearer issuers.
    UnknownIssuer(Option<String>),
    /// The token failed the issuer's checks.
    Token { issuer: String, error: IdTokenError },
    /// The token speaks for a kind of principal this issuer is not accepted for.
    Principal { issuer: String, kind: &'static str },
    /// The issuer's discovery document or keys could not be had.
    Unavailable { issuer: String, cause: String },
    /// A policy rule (or the default) refused the principal; `scopes` are the ones the
    /// rule requires.
    Denied { denied: crate::policy::Denied, scopes: Vec<String> },
    /// A path with a step-up rule: a bearer token carries no second factor of this gateway.
    StepUp,
    /// Service-token credentials that name no live token of this tenant, or the wrong
    /// secret.
    ServiceToken,
}

impl BearerError {
    /// The RFC 6750 3.1 error code for `WWW-Authenticate`, when there is one.
    pub fn rfc6750_error(&self) -> Option<&'static str> {
        match self {
            BearerError::Token { error: IdTokenError::ScopeMissing(_), .. } => Some("insufficient_scope"),
            BearerError::Denied { scopes, .. } if !scopes.is_empty() => Some("insufficient_scope"),
            BearerError::UnknownIssuer(_) | BearerError::Token { .. } | BearerError::Principal { .. } => {
                Some("invalid_token")
            }
            _ => None,
        }
    }

    /// The scopes to name in `WWW-Authenticate` with `insufficient_scope`.
    pub fn scope(&self) -> Option<String> {
        match self {
            BearerError::Token { error: IdTokenError::ScopeMissing(s), .. } => Some(s.clone()),
            BearerError::Denied { scopes, .. } if !scopes.is_empty() => Some(scopes.join(" ")),
            _ => None,
        }
    }
}

impl fmt::Display for BearerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BearerError::UnknownIssuer(iss) => write!(f, "bearer token from an issuer that is not accepted: {iss:?}"),
            BearerError::Token { issuer, error } => write!(f, "bearer token from {issuer}: {error}"),
            BearerError::Principal { issuer, kind } => {
                write!(f, "bearer token from {issuer}: {kind} tokens are not accepted from this issuer")
            }
            BearerError::Unavailable { issuer, cause } => write!(f, "bearer issuer {issuer} unavailable: {cause}"),
            BearerError::Denied { denied, .. } => write!(f, "bearer principal denied by {}", denied.label()),
            BearerError::StepUp => f.write_str("path needs a recent second factor, which a bearer token cannot carry"),
            BearerError::ServiceToken => f.write_str("service token unknown, expired, revoked or with a wrong secret"),
        }
    }
}

/// What to offer the person after a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    None,
    /// Start signing in again.
    Login,
    /// Load the same address again.
    Reload,
    /// Go through two-step verification.
    Verify,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presentation {
    pub status: u16,
    pub code: &'static str,
    pub title: &'static str,
    pub message: String,
    pub retry: Retry,
}

fn p(status: u16, code: &'static str, title: &'static str, message: impl Into<String>, retry: Retry) -> Presentation {
    Presentation { status, code, title, message: message.into(), retry }
}

impl Refusal {
    pub fn present(&self) -> Presentation {
        self.present_with(&|name: &str| name.to_owned())
    }

    /// As [`Refusal::present`], naming providers by their display label.
    pub fn present_with(&self, label: &dyn Fn(&str) -> String) -> Presentation {
        use Retry::*;
        match self {
            Refusal::UnknownHost(_) => p(404, "unknown_host", "Unknown site", "This address is not served by this gateway. Check the address you typed.", None),
            Refusal::ConfigInvalid | Refusal::SigningKeyUnusable(_) => p(500, "config_error", "Configuration error", "The sign-in gateway for this site is misconfigured. The site's operators have been told through the logs; please try again later.", None),
            Refusal::NotFound => p(404, "not_found", "Page not found", "There is no such page on the sign-in gateway.", None),
            Refusal::MethodNotAllowed => p(405, "method_not_allowed", "Not allowed", "This page does not accept that kind of request.", None),
            Refusal::BadRequest(_) => p(400, "bad_request", "Bad request", "The request could not be understood.", None),
            Refusal::AmbiguousPath(why) => p(400, "ambiguous_path", "Address not accepted", format!("This address contains something web servers read in different ways ({why}), so it was not passed on to the site. Check the link, or remove the unusual part of the address."), None),
            Refusal::UnknownProvider(_) => p(404, "unknown_provider", "Unknown sign-in method", "That sign-in method does not exist for this site. Choose one from the sign-in page.", Login),
            Refusal::Storage(_) => p(503, "storage_unavailable", "Temporarily unavailable", "Sign-in is temporarily unavailable because the gateway cannot reach its storage. Please try again in a minute.", Reload),
            Refusal::NoRoles => p(403, "no_roles", "No access assigned", "You signed in successfully, but your account has no roles assigned for this site. Ask your administrator to grant you access.", None),
            Refusal::Forbidden { denied } => p(403, "forbidden", "Access denied", match &denied.name {
                Some(n) => format!("Your account is not allowed to open this page (the site's rule \"{n}\"). Ask your administrator if you need access."),
                Option::None => "Your account is not allowed to open this page. Ask your administrator if you need access.".to_owned(),
            }, None),
            Refusal::Bearer(e) => present_bearer(e),
            Refusal::OriginTimeout { after_ms } => p(504, "origin_timeout", "Site too slow", format!("You are signed in, but the site behind the gateway did not answer within {} seconds. Please try again in a moment.", after_ms.div_ceil(1000)), Reload),
            Refusal::OriginUnreachable(_) => p(502, "origin_unreachable", "Site unreachable", "You are signed in, but the site behind the gateway did not answer. Please try again in a moment.", Reload),
            Refusal::Csrf => p(403, "csrf", "Request refused", "This form has expired or was not sent from this site. Go back, reload the page and try again.", None),
            Refusal::IdpUnavailable(_) => p(503, "idp_unavailable", "Identity provider unavailable", "Your session needs to be renewed, but your identity provider cannot be reached. Please try again in a minute.", Reload),
            Refusal::MfaRequired { step_up: true } => p(403, "step_up_required", "Confirm it is you", "This action needs a recent two-step verification. Verify with your authenticator app, then repeat the action: nothing was sent on your behalf.", Verify),
            Refusal::MfaRequired { step_up: false } => p(401, "mfa_required", "Two-step verification needed", "Finish two-step verification to continue.", Verify),
            Refusal::FreshSignInNotConfirmed { provider } => p(401, "fresh_sign_in_required", "Sign in again to continue", format!("Adding a second factor needs a fresh sign-in, and {} did not confirm one. Sign in again; tell your administrator if this repeats.", label(provider)), Login),
            Refusal::MfaLocked { minutes } => p(429, "mfa_locked", "Too many wrong codes", format!("Two-step verification is locked after too many wrong codes. Try again in {minutes} minute{}, or ask your administrator to reset it.", if *minutes == 1 { "" } else { "s" }), None),
            Refusal::AdminUnauthenticated => p(401, "admin_unauthenticated", "Sign-in required", "The admin API needs an admin session or a valid API token.", None),
            Refusal::AdminForbidden => p(403, "admin_forbidden", "Admins only", "Your account is not an admin of this site.", None),
            Refusal::BadInput(e) => p(400, "bad_input", "Bad request", e.clone(), None),
            Refusal::UnknownUser => p(404, "unknown_user", "Unknown user", "No such user is known here.", None),
            Refusal::RateLimited { retry_after } => p(429, "rate_limited", "Too many sign-in attempts", format!("Too many sign-ins were started from your network. Wait {retry_after} second{} and try again.", if *retry_after == 1 { "" } else { "s" }), None),
            Refusal::UnknownSession => p(404, "unknown_session", "Unknown session", "No such session exists (it may have ended already).", None),
            Refusal::Oidc { provider, error } => present_oidc(&label(provider), error),
            Refusal::PreLogin { error, .. } => present_pre_login(error),
            Refusal::Handoff(error) => present_handoff(error),
            Refusal::ProviderUnavailable { provider, .. } => {
                let provider = label(provider);
                p(502, "idp_unavailable", "Identity provider unavailable", format!("{provider} could not be reached or gave an unusable answer. Please try again in a minute."), Login)
            }
            Refusal::SamlReplay { .. } => p(400, "saml_replay", "Sign-in response already used", "This sign-in response was already used. Start again.", Login),
            Refusal::Saml { connection, error } => present_saml(&label(connection), error),
        }
    }

    /// The audit event this refusal is, if any (a failed sign-in, a refused admin call).
    pub fn audit_event(&self) -> Option<AuditEvent> {
        match self {
            Refusal::Oidc { .. }
            | Refusal::PreLogin { .. }
            | Refusal::Handoff(_)
            | Refusal::ProviderUnavailable { .. }
            | Refusal::NoRoles
            | Refusal::Saml { .. }
            | Refusal::SamlReplay { .. }
            | Refusal::FreshSignInNotConfirmed { .. } => Some(AuditEvent::LoginFailure),
            Refusal::AdminUnauthenticated | Refusal::AdminForbidden => Some(AuditEvent::AdminRefused),
            _ => None,
        }
    }
}

fn present_bearer(e: &BearerError) -> Presentation {
    use Retry::None;
    match e {
        BearerError::Token { error: IdTokenError::ScopeMissing(s), .. } => p(403, "insufficient_scope", "Access denied", format!("The access token does not grant the scope {s:?} this site requires."), None),
        BearerError::Token { error: IdTokenError::Expired { .. }, .. } => p(401, "invalid_token", "Access token expired", "The access token has expired. Get a new one from the issuer and try again.", None),
        BearerError::UnknownIssuer(_) | BearerError::Token { .. } => p(401, "invalid_token", "Access token refused", "The access token failed verification (issuer, signature, audience, type or time). The log line with this reference names the check.", None),
        BearerError::Principal { kind, .. } => p(401, "invalid_token", "Access token refused", format!("Access tokens for a {kind} are not accepted from this issuer."), None),
        BearerError::Unavailable { .. } => p(503, "idp_unavailable", "Token issuer unavailable", "The access token's issuer could not be reached to get its keys. Please try again in a minute.", None),
        BearerError::Denied { scopes, .. } if !scopes.is_empty() => p(403, "insufficient_scope", "Access denied", format!("This path needs an access token with the scopes {scopes:?}."), None),
        BearerError::Denied { denied, .. } => p(403, "forbidden", "Access denied", match &denied.name {
            Some(n) => format!("This client is not allowed to use this path (the site's rule \"{n}\")."),
            Option::None => "This client is not allowed to use this path.".to_owned(),
        }, None),
        BearerError::ServiceToken => p(401, "invalid_client", "Service token refused", "The service token's id and secret were not accepted (unknown, expired, revoked, or a wrong secret).", None),
        BearerError::StepUp => p(403, "step_up_required", "Access denied", "This path needs a recent two-step verification, which only a signed-in person can give.", None),
    }
}

fn present_handoff(e: &HandoffError) -> Presentation {
    use Retry::*;
    match e {
        HandoffError::NotMember { .. } => p(
            403,
            "site_not_member",
            "Site not served here",
            "This sign-in page does not sign people in to that site. Open the site you wanted directly.",
            None,
        ),
        HandoffError::CodeUnknown => p(
            400,
            "handoff_expired",
            "Sign-in expired",
            "This sign-in link is no longer valid (it lasts a minute and works once). Start again.",
            Login,
        ),
        HandoffError::CodeReplayed => p(
            400,
            "handoff_replayed",
            "Sign-in link already used",
            "This sign-in link was already used. If you opened it twice or went back, start again.",
            Login,
        ),
        HandoffError::CodeMismatch(_) => p(
            400,
            "handoff_mismatch",
            "Sign-in link not for this site",
            "This sign-in link was made for another site or another sign-in. Start again from the site you want.",
            Login,
        ),
        HandoffError::CentralEnded => p(
            401,
            "handoff_expired",
            "Sign-in ended",
            "Your sign-in ended before this site could use it. Sign in again.",
            Login,
        ),
    }
}

fn present_pre_login(e: &PreLoginError) -> Presentation {
    use PreLoginError::*;
    use Retry::*;
    match e {
        StateMissing | StateUnknown => p(400, "state_expired", "Sign-in expired", "This sign-in took too long or its link is no longer valid. Start again.", Login),
        StateReplayed => p(400, "state_replayed", "Sign-in link already used", "This sign-in response was already used. If you opened it twice or went back, start again.", Login),
        PendingCookieMissing | PendingCookieMismatch => p(400, "login_not_started_here", "Sign-in not started in this browser", "This sign-in response does not belong to a sign-in started in this browser (or cookies are blocked). Start again from this browser.", Login),
        ProviderMismatch => p(400, "idp_mixup", "Sign-in response from the wrong provider", "The sign-in response did not come from the identity provider the sign-in was sent to. Start again.", Login),
    }
}

fn present_oidc(provider: &str, e: &OidcError) -> Presentation {
    use OidcError::*;
    use Retry::*;
    match e {
        IssuerParamMismatch { .. } => p(400, "idp_mixup", "Sign-in response from the wrong provider", "The sign-in response did not come from the identity provider the sign-in was sent to. Start again.", Login),
        IdpError { error, description } => {
            let detail = match description {
                Some(d) if !d.is_empty() => format!("{error}: {d}"),
                _ => error.clone(),
            };
            p(
                if error == "access_denied" { 403 } else { 400 },
                "idp_error",
                "Sign-in refused by the identity provider",
                format!("{provider} did not sign you in ({detail})."),
                Login,
            )
        }
        MissingCode => p(400, "bad_callback", "Incomplete sign-in response", "The identity provider's response was incomplete. Start again.", Login),
        Downgrade(_) => p(500, "config_error", "Configuration error", "This sign-in method is misconfigured (its identity provider offers no secure token signature). The operators can see the details in the logs.", None),
        Discovery(_) | Jwks(_) | TokenEndpointUnreachable(_) | Userinfo(_) => p(502, "idp_unavailable", "Identity provider unavailable", format!("{provider} could not be reached or gave an unusable answer. Please try again in a minute."), Login),
        TokenEndpoint { status, .. } if *status >= 500 => p(502, "idp_unavailable", "Identity provider unavailable", format!("{provider} could not be reached or gave an unusable answer. Please try again in a minute."), Login),
        TokenEndpoint { .. } | TokenResponse(_) => p(400, "code_rejected", "Sign-in could not be completed", format!("{provider} did not accept the sign-in code (it may have been used already). Start again."), Login),
        IdToken(IdTokenError::Expired { .. } | IdTokenError::IatInFuture { .. } | IdTokenError::IatTooOld { .. } | IdTokenError::NotYetValid { .. }) => p(401, "token_time", "Sign-in could not be verified", "The identity provider's answer is outside its validity period; a clock may be wrong. Start again, and tell your administrator if this repeats.", Login),
        IdToken(_) => p(401, "invalid_token", "Sign-in could not be verified", "The identity provider's answer failed verification, so you were not signed in. Start again, and tell your administrator if this repeats.", Login),
        EmailUnverified => p(403, "email_unverified", "Email address not verified", "Your identity provider has not verified your email address. Verify it there, then sign in again.", Login),
        EmailDomainNotAllowed(_) => p(403, "email_domain", "Account not allowed", "Accounts with your email domain cannot sign in to this site.", None),
        MalformedClaim(c) => p(502, "bad_claims", "Unusable account data", format!("The identity provider sent a malformed {c} claim. Tell your administrator."), None),
    }
}

fn present_saml(connection: &str, e: &crate::saml::response::SamlError) -> Presentation {
    use crate::saml::response::SamlError::*;
    use Retry::*;
    match e {
        Status { codes, message } => {
            let code = codes.last().map(|c| c.rsplit(':').next().unwrap_or(c)).unwrap_or("unknown");
            let detail = match message {
                Some(m) if !m.is_empty() => format!("{code}: {}", crate::oidc::truncate(m, 200)),
                _ => code.to_owned(),
            };
            p(403, "idp_error", "Sign-in refused by the identity provider", format!("{connection} did not sign you in ({detail})."), Login)
        }
        Unsolicited | UnexpectedInResponseTo(_) => p(400, "unsolicited", "Unexpected sign-in response", "This site did not ask for this sign-in response. Start signing in from this site.", Login),
        Expired { .. } | NotYetValid { .. } | ConfirmationExpired { .. } | ConfirmationNotYetValid { .. } | SessionExpired { .. } => p(401, "token_time", "Sign-in could not be verified", "The identity provider's answer is outside its validity period; a clock may be wrong. Start again, and tell your administrator if this repeats.", Login),
        EncryptedAssertionNeedsKey | EncryptedNameIdNeedsKey => p(500, "config_error", "Configuration error", "The identity provider encrypts its answers, which this sign-in method is not set up for. The operators can see the details in the logs.", None),
        _ => p(401, "invalid_saml_response", "Sign-in could not be verified", format!("The sign-in response from {connection} failed verification, so you were not signed in. Start again, and tell your administrator if this repeats."), Login),
    }
}

impl From<KvError> for Refusal {
    fn from(e: KvError) -> Self {
        Refusal::Storage(e)
    }
}

/// Whether a fetch failure is worth reporting as "unavailable" (vs a refusal by the IdP).
pub fn is_transient(e: &FetchError) -> bool {
    matches!(e, FetchError::Unreachable(_) | FetchError::Timeout)
}
