//! The desktop keyring, reached through the Secret Service D-Bus API.
//!
//! Every call runs on its own scoped thread with a current-thread tokio
//! runtime, and that thread is joined (and the runtime, with all of zbus's
//! tasks, dropped) before the call returns. The supervisor clones the
//! sandbox later and must be single-threaded by then, so nothing here may
//! outlive the call: that is why `secret_service::blocking`, which keeps
//! executor threads behind, is not used.
//!
//! Unlocking is attempted without a prompt only: a headless supervisor has
//! nobody to answer one, and a prompt it cannot show would hang the start.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use secret_service::{EncryptionType, Item, SecretService};
use zbus::zvariant::{ObjectPath, OwnedObjectPath};
use zeroize::Zeroizing;

/// How long one keyring call may take before moat gives up on it. A
/// keyring that shows a prompt nobody answers would otherwise stall a start.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

const SERVICE_NAME: &str = "org.freedesktop.secrets";
const SERVICE_PATH: &str = "/org/freedesktop/secrets";
const SERVICE_INTERFACE: &str = "org.freedesktop.Secret.Service";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyringError {
    /// No session bus, or no Secret Service provider on it.
    Unavailable(String),
    /// The item or collection is locked and cannot be unlocked without a
    /// prompt.
    Locked(String),
    /// Anything else the keyring reported.
    Failed(String),
}

impl fmt::Display for KeyringError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyringError::Unavailable(why) => write!(
                f,
                "no keyring: {why}. Start a Secret Service provider in this \
                 session (e.g. `gnome-keyring-daemon --start --components=secrets` \
                 with DBUS_SESSION_BUS_ADDRESS set), or set MOAT_KEY_BACKEND=file \
                 where a key file is acceptable"
            ),
            KeyringError::Locked(why) => write!(
                f,
                "keyring is locked: {why}. Unlock it (log in to the desktop, or \
                 `gnome-keyring-daemon --unlock` with the password on stdin) and retry"
            ),
            KeyringError::Failed(why) => write!(f, "keyring error: {why}"),
        }
    }
}

impl std::error::Error for KeyringError {}

/// Succeeds when a Secret Service provider answers on the session bus.
pub fn available() -> Result<(), KeyringError> {
    on_joined_thread(None, |ss| async move {
        // Opening a session already proved the service exists; asking for
        // its collections proves it answers calls, not only the name.
        ss.service
            .get_all_collections()
            .await
            .map(|_| ())
            .map_err(|e| classify(e, "listing keyring collections"))
    })
}

/// The secret of the first item whose attributes include all of `attrs`,
/// or `None` when no item matches.
pub fn lookup(attrs: &[(&str, &str)]) -> Result<Option<Zeroizing<Vec<u8>>>, KeyringError> {
    lookup_at(None, attrs)
}

/// Stores `secret` in the default collection under `label`, replacing an
/// item that has exactly the same attributes.
pub fn store(label: &str, attrs: &[(&str, &str)], secret: &[u8]) -> Result<(), KeyringError> {
    store_at(None, label, attrs, secret)
}

/// Deletes every item whose attributes include all of `attrs`. Returns
/// whether any was deleted.
pub fn delete(attrs: &[(&str, &str)]) -> Result<bool, KeyringError> {
    delete_at(None, attrs)
}

fn lookup_at(
    address: Option<&str>,
    attrs: &[(&str, &str)],
) -> Result<Option<Zeroizing<Vec<u8>>>, KeyringError> {
    check_attrs(attrs)?;
    on_joined_thread(address, |ss| async move {
        let found = ss
            .service
            .search_items(attr_map(attrs))
            .await
            .map_err(|e| classify(e, "searching the keyring"))?;
        let item = if let Some(item) = found.unlocked.into_iter().next() {
            item
        } else if let Some(item) = found.locked.into_iter().next() {
            ss.unlock(&item.item_path, "the matching keyring item")
                .await?;
            item
        } else {
            return Ok(None);
        };
        read_secret(&item).await.map(Some)
    })
}

fn store_at(
    address: Option<&str>,
    label: &str,
    attrs: &[(&str, &str)],
    secret: &[u8],
) -> Result<(), KeyringError> {
    check_attrs(attrs)?;
    on_joined_thread(address, |ss| async move {
        let collection = ss.service.get_any_collection().await.map_err(|e| match e {
            secret_service::Error::NoResult => KeyringError::Failed(
                "the keyring has no collection to store into; create one (a \
                     desktop login keyring) first"
                    .into(),
            ),
            e => classify(e, "opening the default keyring collection"),
        })?;
        let locked = collection
            .is_locked()
            .await
            .map_err(|e| classify(e, "checking the keyring collection"))?;
        if locked {
            ss.unlock(
                &collection.collection_path,
                "the default keyring collection",
            )
            .await?;
        }
        collection
            .create_item(label, attr_map(attrs), secret, true, "text/plain")
            .await
            .map(|_| ())
            .map_err(|e| classify(e, "storing the keyring item"))
    })
}

fn delete_at(address: Option<&str>, attrs: &[(&str, &str)]) -> Result<bool, KeyringError> {
    check_attrs(attrs)?;
    on_joined_thread(address, |ss| async move {
        let found = ss
            .service
            .search_items(attr_map(attrs))
            .await
            .map_err(|e| classify(e, "searching the keyring"))?;
        let mut deleted = false;
        for item in found.locked.iter() {
            ss.unlock(&item.item_path, "the matching keyring item")
                .await?;
        }
        for item in found.unlocked.iter().chain(found.locked.iter()) {
            item.delete()
                .await
                .map_err(|e| classify(e, "deleting the keyring item"))?;
            deleted = true;
        }
        Ok(deleted)
    })
}

/// An empty attribute list would match every item in the keyring: never
/// what a caller means, and for `delete` a disaster.
fn check_attrs(attrs: &[(&str, &str)]) -> Result<(), KeyringError> {
    if attrs.is_empty() {
        return Err(KeyringError::Failed(
            "no attributes given to select a keyring item".into(),
        ));
    }
    Ok(())
}

fn attr_map<'a>(attrs: &[(&'a str, &'a str)]) -> HashMap<&'a str, &'a str> {
    attrs.iter().copied().collect()
}

async fn read_secret(item: &Item<'_>) -> Result<Zeroizing<Vec<u8>>, KeyringError> {
    item.get_secret()
        .await
        .map(Zeroizing::new)
        .map_err(|e| classify(e, "reading the keyring item"))
}

/// An open Secret Service session and the connection it runs on.
struct Session<'a> {
    conn: zbus::Connection,
    service: SecretService<'a>,
}

impl Session<'_> {
    /// Asks the service to unlock `path` without showing a prompt. The
    /// service answers with the objects it could unlock at once and a
    /// prompt path for the rest; the prompt is not run.
    async fn unlock(&self, path: &OwnedObjectPath, what: &str) -> Result<(), KeyringError> {
        let objects: Vec<ObjectPath<'_>> = vec![path.as_ref()];
        let reply = self
            .conn
            .call_method(
                Some(SERVICE_NAME),
                SERVICE_PATH,
                Some(SERVICE_INTERFACE),
                "Unlock",
                &(objects,),
            )
            .await
            .map_err(|e| classify(e.into(), "unlocking the keyring"))?;
        let (unlocked, prompt): (Vec<OwnedObjectPath>, OwnedObjectPath) = reply
            .body()
            .deserialize()
            .map_err(|e| KeyringError::Failed(format!("unexpected Unlock reply: {e}")))?;
        if prompt.as_str() != "/" {
            // Not shown, so dismissed: the service need not keep it around.
            // Best effort; the answer changes nothing.
            let _ = self
                .conn
                .call_method(
                    Some(SERVICE_NAME),
                    prompt.as_str(),
                    Some("org.freedesktop.Secret.Prompt"),
                    "Dismiss",
                    &(),
                )
                .await;
        }
        if unlocked.iter().any(|p| p == path) {
            Ok(())
        } else {
            Err(KeyringError::Locked(format!(
                "{what} is locked and unlocking it needs a password prompt"
            )))
        }
    }
}

/// Runs `op` against the Secret Service on a fresh scoped thread and joins
/// it. `address` overrides the session bus address (tests only).
fn on_joined_thread<T, F, Fut>(address: Option<&str>, op: F) -> Result<T, KeyringError>
where
    T: Send,
    F: FnOnce(Session<'static>) -> Fut + Send,
    Fut: std::future::Future<Output = Result<T, KeyringError>>,
{
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("moat-keyring".into())
            .spawn_scoped(scope, move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| KeyringError::Failed(format!("starting the D-Bus client: {e}")))?;
                let result = runtime.block_on(async move {
                    let call = async move {
                        let session = connect(address).await?;
                        op(session).await
                    };
                    match tokio::time::timeout(CALL_TIMEOUT, call).await {
                        Ok(result) => result,
                        Err(_) => Err(KeyringError::Failed(format!(
                            "the keyring did not answer within {} s",
                            CALL_TIMEOUT.as_secs()
                        ))),
                    }
                });
                // Dropping the runtime here, on this thread, ends zbus's
                // background tasks before the thread is joined.
                drop(runtime);
                result
            })
            .map_err(|e| KeyringError::Failed(format!("starting the keyring thread: {e}")))?;
        worker
            .join()
            .unwrap_or_else(|_| Err(KeyringError::Failed("the keyring thread panicked".into())))
    })
}

async fn connect(address: Option<&str>) -> Result<Session<'static>, KeyringError> {
    let conn = match address {
        Some(address) => match zbus::connection::Builder::address(address) {
            Ok(builder) => builder.build().await,
            Err(e) => Err(e),
        },
        None => zbus::Connection::session().await,
    }
    .map_err(|e| KeyringError::Unavailable(format!("cannot reach the D-Bus session bus ({e})")))?;
    // Dh keeps the secret encrypted on the bus; every provider supports it.
    let service = SecretService::connect_with_existing(EncryptionType::Dh, conn.clone())
        .await
        .map_err(|e| match classify(e, "opening a Secret Service session") {
            KeyringError::Failed(why) => KeyringError::Unavailable(why),
            other => other,
        })?;
    Ok(Session { conn, service })
}

/// Sorts a Secret Service error into what the caller can act on.
fn classify(e: secret_service::Error, doing: &str) -> KeyringError {
    use secret_service::Error as E;
    match e {
        E::Unavailable => {
            KeyringError::Unavailable(format!("{doing}: no Secret Service provider on the bus"))
        }
        E::Locked | E::Prompt | E::PromptDisconnected => {
            KeyringError::Locked(format!("{doing}: {e}"))
        }
        E::Zbus(ref z) if is_no_service(z) => KeyringError::Unavailable(format!(
            "{doing}: no Secret Service provider on the session bus"
        )),
        E::ZbusFdo(zbus::fdo::Error::ServiceUnknown(_))
        | E::ZbusFdo(zbus::fdo::Error::NameHasNoOwner(_)) => KeyringError::Unavailable(format!(
            "{doing}: no Secret Service provider on the session bus"
        )),
        E::Zbus(zbus::Error::InputOutput(_)) | E::Zbus(zbus::Error::Address(_)) => {
            KeyringError::Unavailable(format!("{doing}: {e}"))
        }
        E::Zbus(zbus::Error::MethodError(ref name, _, _))
            if name.as_str() == "org.freedesktop.Secret.Error.IsLocked" =>
        {
            KeyringError::Locked(format!("{doing}: the keyring is locked"))
        }
        e => KeyringError::Failed(format!("{doing}: {e}")),
    }
}

fn is_no_service(e: &zbus::Error) -> bool {
    match e {
        zbus::Error::MethodError(name, _, _) => matches!(
            name.as_str(),
            "org.freedesktop.DBus.Error.ServiceUnknown"
                | "org.freedesktop.DBus.Error.NameHasNoOwner"
                | "org.freedesktop.DBus.Error.Spawn.ServiceNotFound"
        ),
        zbus::Error::FDO(fdo) => matches!(
            **fdo,
            zbus::fdo::Error::ServiceUnknown(_) | zbus::fdo::Error::NameHasNoOwner(_)
        ),
        zbus::Error::InterfaceNotFound => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task_count() -> usize {
        std::fs::read_dir("/proc/self/task").unwrap().count()
    }

    #[test]
    fn no_bus_is_unavailable_and_leaves_no_thread() {
        let dir = tempfile::tempdir().unwrap();
        let address = format!("unix:path={}/no-bus", dir.path().display());
        let err = lookup_at(Some(&address), &[("moat-secret", "x")]).unwrap_err();
        assert!(matches!(err, KeyringError::Unavailable(_)), "{err:?}");
        assert!(err.to_string().contains("no keyring"), "{err}");
        assert!(err.to_string().contains("MOAT_KEY_BACKEND=file"), "{err}");
        let err = store_at(Some(&address), "l", &[("moat-secret", "x")], b"v").unwrap_err();
        assert!(matches!(err, KeyringError::Unavailable(_)), "{err:?}");
        let err = delete_at(Some(&address), &[("moat-secret", "x")]).unwrap_err();
        assert!(matches!(err, KeyringError::Unavailable(_)), "{err:?}");
    }

    #[test]
    fn call_joins_its_thread() {
        // Other unit tests run on threads of this process, so compare
        // against a thread that is known to be gone: run many calls, and
        // check the count does not grow with them.
        let dir = tempfile::tempdir().unwrap();
        let address = format!("unix:path={}/no-bus", dir.path().display());
        let before = task_count();
        for _ in 0..20 {
            let _ = lookup_at(Some(&address), &[("a", "b")]);
        }
        assert!(task_count() < before + 10, "keyring calls left threads");
    }

    #[test]
    fn empty_attributes_are_refused() {
        let err = delete(&[]).unwrap_err();
        assert!(matches!(err, KeyringError::Failed(_)), "{err:?}");
        assert!(lookup(&[]).is_err());
        assert!(store("l", &[], b"v").is_err());
    }

    #[test]
    fn messages_say_what_to_do() {
        let locked = KeyringError::Locked("x".into()).to_string();
        assert!(locked.contains("Unlock"), "{locked}");
        let none = KeyringError::Unavailable("x".into()).to_string();
        assert!(none.contains("gnome-keyring-daemon"), "{none}");
    }
}
