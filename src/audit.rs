//! Audit events: what the audit trail records. Each is a log line; with
//! `gateway.audit_kv` also a KV entry, and with `gateway.audit_webhook` a webhook delivery.
//! Only `Cx::audit` in the gateway writes one, so every entry of the trail has
//! a name from this list.

/// One kind of audit event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditEvent {
    LoginSuccess,
    LoginFailure,
    Logout,
    SessionRevoked,
    SessionExpired,
    MfaEnrolled,
    MfaVerified,
    MfaFailed,
    MfaLocked,
    MfaReset,
    BackupCodeUsed,
    BackupCodesRegenerated,
    AdminCall,
    AdminRefused,
    BackchannelLogout,
    PasskeyRegistered,
    PasskeyRemoved,
    PasskeyVerified,
    PasskeyFailed,
    PasskeyCounterRegressed,
}

impl AuditEvent {
    pub const ALL: [AuditEvent; 20] = [
        AuditEvent::LoginSuccess,
        AuditEvent::LoginFailure,
        AuditEvent::Logout,
        AuditEvent::SessionRevoked,
        AuditEvent::SessionExpired,
        AuditEvent::MfaEnrolled,
        AuditEvent::MfaVerified,
        AuditEvent::MfaFailed,
        AuditEvent::MfaLocked,
        AuditEvent::MfaReset,
        AuditEvent::BackupCodeUsed,
        AuditEvent::BackupCodesRegenerated,
        AuditEvent::AdminCall,
        AuditEvent::AdminRefused,
        AuditEvent::BackchannelLogout,
        AuditEvent::PasskeyRegistered,
        AuditEvent::PasskeyRemoved,
        AuditEvent::PasskeyVerified,
        AuditEvent::PasskeyFailed,
        AuditEvent::PasskeyCounterRegressed,
    ];

    /// The `event` field of the log line and the stored entry.
    pub fn name(self) -> &'static str {
        match self {
            AuditEvent::LoginSuccess => "login_success",
            AuditEvent::LoginFailure => "login_failure",
            AuditEvent::Logout => "logout",
            AuditEvent::SessionRevoked => "session_revoked",
            AuditEvent::SessionExpired => "session_expired",
            AuditEvent::MfaEnrolled => "mfa_enrolled",
            AuditEvent::MfaVerified => "mfa_verified",
            AuditEvent::MfaFailed => "mfa_failed",
            AuditEvent::MfaLocked => "mfa_locked",
            AuditEvent::MfaReset => "mfa_reset",
            AuditEvent::BackupCodeUsed => "backup_code_used",
            AuditEvent::BackupCodesRegenerated => "backup_codes_regenerated",
            AuditEvent::AdminCall => "admin_call",
            AuditEvent::AdminRefused => "admin_refused",
            AuditEvent::BackchannelLogout => "backchannel_logout",
            AuditEvent::PasskeyRegistered => "passkey_registered",
            AuditEvent::PasskeyRemoved => "passkey_removed",
            AuditEvent::PasskeyVerified => "passkey_verified",
            AuditEvent::PasskeyFailed => "passkey_failed",
            AuditEvent::PasskeyCounterRegressed => "passkey_counter_regressed",
        }
    }
}
