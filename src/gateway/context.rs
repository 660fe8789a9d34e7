//! The per-request context, and the order in which the shell drives the core.
//!
//! For each request the shell calls, in this order:
//!
//! 1. [`Gateway::body_limit`](super::Gateway::body_limit) for a gateway route, to know how
//!    many body bytes to read (other requests stream their body to the origin);
//! 2. [`Gateway::handle`](super::Gateway::handle), which resolves the tenant, builds one
//!    [`Cx`] and returns an [`Outcome`]: the response or the request to forward, and the
//!    work to run after the response (audit webhook deliveries);
//! 3. for [`Action::Forward`](super::Action::Forward), the origin fetch, then
//!    [`Gateway::origin_failed`](super::Gateway::origin_failed) or
//!    [`Gateway::origin_timed_out`](super::Gateway::origin_timed_out) when it fails;
//! 4. [`Gateway::run_deferred`](super::Gateway::run_deferred) for each deferred job, after
//!    the response (`waitUntil`).
//!
//! A [`Cx`] lives for one request: the ports, the request, its tenant, and the audit events
//! the request produced. Audit events are written when the request ends, by the request
//! that produced them; nothing is shared between requests but the caches of `Gateway`.

use std::cell::RefCell;

use serde_json::{json, Value};

use super::{Action, Deferred};
use crate::audit::AuditEvent;
use crate::config::Tenant;
use crate::http::Request;
use crate::ports::Ports;

/// One request's context: what every handler needs.
pub(crate) struct Cx<'r> {
    pub ports: Ports<'r>,
    pub req: &'r Request,
    pub tenant: &'r Tenant,
    audit: RefCell<Vec<Value>>,
}

/// What the shell does with a request: the action, then the deferred work.
#[derive(Debug)]
pub struct Outcome {
    pub action: Action,
    /// Work the shell runs after the response (`waitUntil`).
    pub deferred: Vec<Deferred>,
}

impl<'r> Cx<'r> {
    pub fn new(ports: Ports<'r>, req: &'r Request, tenant: &'r Tenant) -> Self {
        Self { ports, req, tenant, audit: RefCell::default() }
    }

    /// Writes one log line (not an audit event).
    /// The tenant whose second-factor records this request's user has: a site's are its
    /// sign-in host's (the second factor is done once, centrally), others' their own.
    pub fn factors(&self) -> &'r str {
        self.tenant.sign_in_via.as_deref().unwrap_or(&self.tenant.id)
    }

    pub fn log(&self, event: Value) {
        log_line(self.ports, event);
    }

    /// Writes an audit event's log line and keeps it for the audit trail of this request.
    pub fn audit(&self, event: AuditEvent, mut fields: Value) {
        if let Value::Object(m) = &mut fields {
            m.insert("event".into(), json!(event.name()));
            m.entry("tenant").or_insert_with(|| json!(self.tenant.id));
        }
        let line = stamp(self.ports, fields);
        self.ports.rt.log(&line.to_string());
        self.audit.borrow_mut().push(line);
    }

    /// The audit events this request produced, in order.
    pub fn take_audit(&self) -> Vec<Value> {
        std::mem::take(&mut *self.audit.borrow_mut())
    }
}

fn stamp(ports: Ports<'_>, mut event: Value) -> Value {
    if let Value::Object(m) = &mut event {
        m.insert("time".into(), json!(ports.now()));
        m.entry("level").or_insert(json!("info"));
    }
    event
}

/// Writes one structured log line with its time and level.
pub(crate) fn log_line(ports: Ports<'_>, event: Value) {
    ports.rt.log(&stamp(ports, event).to_string());
}
