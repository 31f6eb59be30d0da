//! Rotating the managed Redis password without downtime.
//!
//! The user asks for a password in `<name>-redis-auth` (generated at creation; edit it to rotate). What
//! the pods are given lives in the operator's own `<name>-redis-applied` Secret: the `password` clients
//! and servers use now, and the `passwords` the servers accept. When the two differ the operator walks
//! the rotation of [`switchboard_redis::passwords`] one step per reconcile, applying each step to every
//! running data node and sentinel before it writes the step into the applied Secret:
//!
//! ```text
//! asked new, applied {old, [old]}
//!   1. servers accept [old, new]            ─▶ applied {old, [old, new]}
//!   2. servers use new with their peers     ─▶ applied {new, [old, new]} ─▶ chat-node and registry
//!                                                pods roll to new (their template hash follows it)
//!   3. once every chat-node and registry pod runs with new:
//!      servers accept [new]                 ─▶ applied {new, [new]}      (applied to the servers again)
//! ```
//!
//! Data nodes and sentinels never restart for it (their template does not carry the password); one
//! that restarts during a rotation starts with the step in the applied Secret and is brought to the
//! next step by the next application. A server that cannot be reached holds the rotation at its step
//! (`Reconciling`, reason `PasswordRotating`), with clients working throughout.

use fred::types::config::TlsConfig;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::events::EventType;
use switchboard_redis::passwords::{self, Passwords, Server};
use switchboard_runtime::report;
use tracing::info;

use super::apply::name_conflict;
use super::{Error, Problem, Result};
use crate::context::{Context, FIELD_MANAGER};
use crate::crd::ChatCluster;
use crate::resources::{self, Component, Names, PASSWORD_KEY, PASSWORDS_KEY};

/// Time allowed to set the passwords of one server.
const ASK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// What the pods are given now.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Applied {
    current: String,
    accepted: Vec<String>,
}

/// The state of the password after [`before_render`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Rotation {
    /// The password clients and servers use now: chat-node and registry pods are rendered with it.
    pub(super) current: String,
    /// Why the rotation is not finished, when one is under way.
    pub(super) waiting: Option<String>,
    /// Step 3 is due once the clients run with `current`.
    finishing: bool,
}

/// What to do with the applied passwords `applied` when the user asks for `wanted`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Next {
    /// Nothing is under way.
    Steady,
    /// Step 1: servers accept both.
    AcceptBoth(Vec<String>),
    /// Step 2: servers (and then clients) use `wanted`.
    Switch,
    /// Step 3 (after the clients rolled): only `current` is accepted.
    Retire,
}

fn next(applied: &Applied, wanted: &str) -> Next {
    let Applied { current, accepted } = applied;
    if current == wanted && accepted.as_slice() == [wanted.to_owned()] {
        return Next::Steady;
    }
    // Before step 2 the current password leads the list; after it the old one does.
    let switched = accepted.first() != Some(current);
    if !accepted.iter().any(|p| p == wanted) {
        // A new password while the clients may still use the old one: finish that rotation first.
        // Before the switch nobody uses the other accepted password, so it is simply replaced.
        return if switched {
            Next::Retire
        } else {
            Next::AcceptBoth(vec![current.clone(), wanted.to_owned()])
        };
    }
    if current != wanted {
        return Next::Switch;
    }
    Next::Retire
}

/// A password that fits the servers' configuration lines and the ACL syntax.
fn usable(password: &str) -> bool {
    !password.is_empty()
        && !password
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
}

/// Reads the applied passwords (creating them from `wanted` the first time) and takes steps 1 and 2 when
/// due. A problem: the applied Secret's name is taken (no rotation then), or `wanted` cannot be used
/// (the applied password stays).
pub(super) async fn before_render(
    cc: &ChatCluster,
    ctx: &Context,
    ns: &str,
    uid: &str,
    wanted: &str,
    tls: Option<&TlsConfig>,
) -> Result<(Option<Rotation>, Option<Problem>)> {
    let names = Names::of(cc)?;
    let name = names.redis_applied_secret();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let existing = secrets
        .get_opt(&name)
        .await
        .map_err(Error::kube("get", "Secret", &name))?;
    if let Some(secret) = &existing
        && !resources::is_controlled_by(&secret.metadata, uid)
    {
        return Ok((
            None,
            Some(name_conflict("Secret", ns, &name, &secret.metadata)),
        ));
    }
    let applied = existing.as_ref().and_then(read_applied);
    let Some(applied) = applied else {
        // First reconcile (or an operator upgrade): the pods have been running with `wanted`.
        if !usable(wanted) {
            return Ok((None, Some(unusable(&names))));
        }
        let applied = Applied {
            current: wanted.to_owned(),
            accepted: vec![wanted.to_owned()],
        };
        write(cc, ctx, ns, &applied).await?;
        return Ok((Some(settled(applied)), None));
    };
    let next = next(&applied, wanted);
    if !usable(wanted) && next != Next::Steady {
        return Ok((Some(settled(applied)), Some(unusable(&names))));
    }
    let step = match next {
        Next::Steady => return Ok((Some(settled(applied)), None)),
        Next::Retire => {
            return Ok((
                Some(Rotation {
                waiting: Some(
                    "rotating the Redis password: waiting for every chat-node and registry pod to \
                     run with the new one before the old one is refused"
                        .to_owned(),
                ),
                    current: applied.current,
                    finishing: true,
                }),
                None,
            ));
        }
        Next::AcceptBoth(accepted) => Applied {
            current: applied.current.clone(),
            accepted,
        },
        Next::Switch => Applied {
            current: wanted.to_owned(),
            accepted: applied.accepted.clone(),
        },
    };
    if let Err(why) = apply_to_servers(cc, ctx, ns, &step, tls).await? {
        let waiting = Rotation {
            current: applied.current,
            waiting: Some(format!("rotating the Redis password: {why}")),
            finishing: false,
        };
        return Ok((Some(waiting), None));
    }
    write(cc, ctx, ns, &step).await?;
    // A reason per step: Events of one reason on one object are folded into one series.
    let (n, reason, what) = if step.current == applied.current {
        (
            1,
            "PasswordRotationStarted",
            "the Redis servers accept the old and the new password",
        )
    } else {
        (
            2,
            "PasswordSwitched",
            "the Redis servers use the new password with each other; chat-node and registry pods roll to it",
        )
    };
    info!(step = n, "Redis password rotation");
    ctx.event(
        cc,
        EventType::Normal,
        reason,
        format!("step {n} of 3: {what}"),
    )
    .await;
    let rotation = Rotation {
        current: step.current,
        waiting: Some(format!(
            "rotating the Redis password: step {n} of 3 done ({what})"
        )),
        finishing: false,
    };
    Ok((Some(rotation), None))
}

/// Step 3, once every chat-node and registry pod runs the template rendered with the current password
/// (`deployments`, as just applied): the servers refuse the old one. Returns why it waits, if it does.
pub(super) async fn after_apply(
    cc: &ChatCluster,
    ctx: &Context,
    ns: &str,
    rotation: &Rotation,
    deployments: &[&Deployment],
    tls: Option<&TlsConfig>,
) -> Result<Option<String>> {
    if !rotation.finishing {
        return Ok(rotation.waiting.clone());
    }
    if let Some(d) = deployments.iter().find(|d| !rolled_out(d)) {
        return Ok(Some(format!(
            "rotating the Redis password: waiting for Deployment {} to roll to the new password \
             before the old one is refused",
            d.name_any()
        )));
    }
    let done = Applied {
        current: rotation.current.clone(),
        accepted: vec![rotation.current.clone()],
    };
    if let Err(why) = apply_to_servers(cc, ctx, ns, &done, tls).await? {
        return Ok(Some(format!("rotating the Redis password: {why}")));
    }
    write(cc, ctx, ns, &done).await?;
    // Once more: a server that started between the application and the write read both passwords.
    if let Err(why) = apply_to_servers(cc, ctx, ns, &done, tls).await? {
        return Ok(Some(format!("rotating the Redis password: {why}")));
    }
    ctx.event(
        cc,
        EventType::Normal,
        "PasswordRotated",
        "step 3 of 3: the old Redis password is refused; the rotation is complete".to_owned(),
    )
    .await;
    Ok(None)
}

/// Every pod of `d` runs its current template and is available (and no older pod is left).
fn rolled_out(d: &Deployment) -> bool {
    let want = d.spec.replicas.unwrap_or(1);
    let Some(status) = &d.status else {
        return false;
    };
    status.observed_generation >= d.metadata.generation
        && status.updated_replicas.unwrap_or(0) == want
        && status.replicas.unwrap_or(0) == want
        && status.available_replicas.unwrap_or(0) == want
}

fn settled(applied: Applied) -> Rotation {
    Rotation {
        current: applied.current,
        waiting: None,
        finishing: false,
    }
}

fn unusable(names: &Names) -> Problem {
    Problem {
        reason: "PasswordUnusable",
        message: format!(
            "the Redis password in Secret {} holds a space or a control character, which Redis's \
             configuration cannot carry: put another one there (the one in use stays until then)",
            names.redis_secret()
        ),
    }
}

fn read_applied(secret: &Secret) -> Option<Applied> {
    let data = secret.data.as_ref()?;
    let text = |key: &str| {
        data.get(key)
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
    };
    let current = text(PASSWORD_KEY).filter(|p| !p.is_empty())?;
    let mut accepted: Vec<String> = text(PASSWORDS_KEY)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if !accepted.contains(&current) {
        accepted.push(current.clone());
    }
    Some(Applied { current, accepted })
}

async fn write(cc: &ChatCluster, ctx: &Context, ns: &str, applied: &Applied) -> Result<()> {
    let secret = resources::applied_passwords_secret(cc, &applied.current, &applied.accepted)?;
    let name = secret.name_any();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    secrets
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await
        .map_err(Error::kube("apply", "Secret", &name))?;
    Ok(())
}

/// Sets `applied` on every running data node and sentinel of `cc`; `Ok(Err(why))` when one is not there
/// or refuses.
async fn apply_to_servers(
    cc: &ChatCluster,
    ctx: &Context,
    ns: &str,
    applied: &Applied,
    tls: Option<&TlsConfig>,
) -> Result<Result<(), String>> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let master_name = cc.spec.redis.managed.master_name.clone();
    let passwords = Passwords {
        current: &applied.current,
        accepted: &applied.accepted,
    };
    for component in [Component::Redis, Component::Sentinel] {
        let selector = resources::selector_string(cc, component);
        let list = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(Error::kube("list", "Pod", &selector))?;
        let server = match component {
            Component::Sentinel => Server::Sentinel {
                master_name: &master_name,
            },
            _ => Server::Data,
        };
        for pod in list
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
        {
            let ip = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref());
            let domain = &ctx.config.cluster_domain;
            let Some(addr) = resources::server_addr(cc, domain, &pod.name_any(), ip, component)
            else {
                return Ok(Err(format!("pod {} has no address yet", pod.name_any())));
            };
            if let Err(e) = passwords::apply(&addr, server, passwords, tls, ASK_TIMEOUT).await {
                return Ok(Err(format!(
                    "pod {}: {}",
                    pod.name_any(),
                    report::chain(&e)
                )));
            }
        }
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(current: &str, accepted: &[&str]) -> Applied {
        Applied {
            current: current.to_owned(),
            accepted: accepted.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    #[test]
    fn a_rotation_takes_three_steps_in_order() {
        assert_eq!(next(&applied("old", &["old"]), "old"), Next::Steady);
        assert_eq!(
            next(&applied("old", &["old"]), "new"),
            Next::AcceptBoth(vec!["old".to_owned(), "new".to_owned()])
        );
        assert_eq!(next(&applied("old", &["old", "new"]), "new"), Next::Switch);
        assert_eq!(next(&applied("new", &["old", "new"]), "new"), Next::Retire);
        assert_eq!(next(&applied("new", &["new"]), "new"), Next::Steady);
    }

    #[test]
    fn a_second_change_replaces_an_unused_password_but_waits_for_clients_on_the_old_one() {
        // Changed again before the switch: the first new password was never used; replace it.
        assert_eq!(
            next(&applied("old", &["old", "new"]), "newer"),
            Next::AcceptBoth(vec!["old".to_owned(), "newer".to_owned()])
        );
        // Changed again after the switch: clients may still use "old"; finish first.
        assert_eq!(
            next(&applied("new", &["old", "new"]), "newer"),
            Next::Retire
        );
        // Changed back to the old one after the switch: switch back (both are still accepted).
        assert_eq!(next(&applied("new", &["old", "new"]), "old"), Next::Switch);
    }

    #[test]
    fn passwords_with_spaces_or_control_characters_are_not_usable() {
        assert!(usable("0123abcd"));
        assert!(usable("p@ss!word#1"));
        assert!(!usable(""));
        assert!(!usable("two words"));
        assert!(!usable("line\nbreak"));
    }
}
