//! The WebAuthn relying party behind passkeys, by `webauthn_rp` (pure Rust,
//! no OpenSSL): the options a ceremony sends, and the checks of what comes
//! back (challenge, origin, rpId, signature, counter). Plain bytes in and
//! out; the ceremony state and the credentials live in the store.

use std::num::NonZeroU32;

use serde_json::Value;
use webauthn_rp::bin::{Decode, Encode};
use webauthn_rp::request::auth::{
    AllowedCredential, AllowedCredentials, AuthenticationVerificationOptions,
    SignatureCounterEnforcement,
};
use webauthn_rp::request::register::{
    AuthenticatorSelectionCriteria, CredProtect, Nickname, PublicKeyCredentialUserEntity,
    RegistrationVerificationOptions, ResidentKeyRequirement, UserHandle16, Username,
};
use webauthn_rp::request::{
    AsciiDomain, Credentials, PublicKeyCredentialDescriptor, RpId, TimedCeremony,
    UserVerificationRequirement,
};
use webauthn_rp::response::auth::AuthenticatorData;
use webauthn_rp::response::auth::error::AuthCeremonyErr;
use webauthn_rp::response::register::error::RegCeremonyErr;
use webauthn_rp::response::register::{CompressedPubKey, DynamicState, StaticState};
use webauthn_rp::response::{AuthTransports, AuthenticatorTransport, CredentialId};
use webauthn_rp::{
    AuthenticatedCredential, DiscoverableAuthentication16, DiscoverableAuthenticationServerState,
    DiscoverableCredentialRequestOptions, NonDiscoverableAuthentication16,
    NonDiscoverableAuthenticationServerState, NonDiscoverableCredentialRequestOptions,
    PublicKeyCredentialCreationOptions, Registration, RegistrationServerState,
};

use crate::config::{PasskeysSection, UserVerification};

/// Why an answer was refused: told to the client (it holds no secret).
pub type Reason = String;

/// The relying party of `[passkeys]`.
pub struct RelyingParty {
    rp_id: RpId,
    origins: Vec<String>,
    timeout_ms: NonZeroU32,
    uv: UserVerification,
}

/// A ceremony begun: the challenge (its key in the store), the state to
/// keep until the finish, and the options for `navigator.credentials`.
pub struct Begun {
    pub challenge: String,
    pub state: Vec<u8>,
    pub options: Value,
}

/// A credential a registration proved.
pub struct NewCredential {
    pub credential_id: Vec<u8>,
    pub public_key: Vec<u8>,
    pub state: Vec<u8>,
    pub transports: Vec<String>,
}

/// A stored credential, as an assertion is checked against it.
pub struct StoredCredential<'a> {
    pub credential_id: &'a [u8],
    pub user_handle: [u8; 16],
    pub public_key: &'a [u8],
    pub state: &'a [u8],
}

/// What an assertion proved.
#[derive(Debug)]
pub struct Asserted {
    /// The credential's state after this use (the new counter).
    pub state: Vec<u8>,
    /// The authenticator verified the user (PIN, biometrics): the UV flag.
    pub user_verified: bool,
}

/// What the client said an assertion is about, before it is checked.
pub struct AssertionClaims {
    pub challenge: String,
    pub credential_id: Vec<u8>,
    pub user_handle: Option<[u8; 16]>,
}

/// An assertion refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The signature counter did not go up: a cloned authenticator.
    CounterRegressed,
    Other(Reason),
}

const TRANSPORTS: [(AuthenticatorTransport, &str); 6] = [
    (AuthenticatorTransport::Ble, "ble"),
    (AuthenticatorTransport::Hybrid, "hybrid"),
    (AuthenticatorTransport::Internal, "internal"),
    (AuthenticatorTransport::Nfc, "nfc"),
    (AuthenticatorTransport::SmartCard, "smart-card"),
    (AuthenticatorTransport::Usb, "usb"),
];

fn transport_names(t: AuthTransports) -> Vec<String> {
    TRANSPORTS
        .iter()
        .filter(|(kind, _)| t.contains(*kind))
        .map(|(_, name)| (*name).to_string())
        .collect()
}

fn transports_of(names: &[String]) -> AuthTransports {
    TRANSPORTS
        .iter()
        .filter(|(_, name)| names.iter().any(|n| n == name))
        .fold(AuthTransports::NONE, |t, (kind, _)| t.add(*kind))
}

fn challenge_key(c: webauthn_rp::response::SentChallenge) -> String {
    format!("{:032x}", c.0)
}

fn descriptor(id: &[u8], transports: &[String]) -> Option<PublicKeyCredentialDescriptor<Vec<u8>>> {
    Some(PublicKeyCredentialDescriptor {
        id: CredentialId::<Vec<u8>>::decode(id.to_vec()).ok()?,
        transports: transports_of(transports),
    })
}

fn json<T: serde::Serialize>(v: &T) -> Result<Value, Reason> {
    serde_json::to_value(v).map_err(|e| format!("options could not be rendered: {e}"))
}

impl RelyingParty {
    /// The relying party of `cfg`; None while passkeys are off.
    pub fn new(cfg: &PasskeysSection) -> Result<Option<RelyingParty>, String> {
        if !cfg.enabled() {
            return Ok(None);
        }
        if cfg.rp_id.parse::<std::net::IpAddr>().is_ok() {
            return Err(format!(
                "passkeys.rp_id: `{}` is an IP address; WebAuthn needs a domain name",
                cfg.rp_id
            ));
        }
        let domain = AsciiDomain::try_from(cfg.rp_id.to_ascii_lowercase())
            .map_err(|e| format!("passkeys.rp_id: `{}` is not a domain name: {e}", cfg.rp_id))?;
        let ms = cfg
            .challenge_ttl_seconds
            .saturating_mul(1000)
            .min(u32::MAX as u64) as u32;
        Ok(Some(RelyingParty {
            rp_id: RpId::Domain(domain),
            origins: cfg.allowed_origins(),
            timeout_ms: NonZeroU32::new(ms).unwrap_or(NonZeroU32::MIN),
            uv: cfg.user_verification,
        }))
    }

    fn uv(&self) -> UserVerificationRequirement {
        match self.uv {
            UserVerification::Required => UserVerificationRequirement::Required,
            UserVerification::Preferred => UserVerificationRequirement::Preferred,
            UserVerification::Discouraged => UserVerificationRequirement::Discouraged,
        }
    }

    /// Creation options for a new passkey of the user `handle` (named
    /// `name`), excluding the credentials the user already holds.
    pub fn begin_registration(
        &self,
        handle: [u8; 16],
        name: &str,
        display_name: &str,
        exclude: &[(&[u8], &[String])],
    ) -> Result<Begun, Reason> {
        let handle = UserHandle16::from(handle);
        let name = Username::try_from(name)
            .or_else(|_| Username::try_from("user"))
            .map_err(|e| format!("user name: {e}"))?;
        let user = PublicKeyCredentialUserEntity {
            name,
            id: &handle,
            display_name: Nickname::try_from(display_name).ok(),
        };
        let exclude = exclude
            .iter()
            .filter_map(|(id, t)| descriptor(id, t))
            .collect();
        let mut options = PublicKeyCredentialCreationOptions::passkey(&self.rp_id, user, exclude);
        options.timeout = self.timeout_ms;
        options.authenticator_selection = AuthenticatorSelectionCriteria {
            resident_key: ResidentKeyRequirement::Preferred,
            user_verification: self.uv(),
            ..AuthenticatorSelectionCriteria::passkey()
        };
        options.extensions.cred_protect = CredProtect::None;
        let (server, client) = options
            .start_ceremony()
            .map_err(|e| format!("creation options: {e}"))?;
        Ok(Begun {
            challenge: challenge_key(server.sent_challenge()),
            options: json(&client)?,
            state: server.encode().map_err(|e| format!("state: {e}"))?,
        })
    }

    /// Request options: for the `allow`ed credentials, or (empty) for any
    /// discoverable credential of this relying party.
    pub fn begin_assertion(&self, allow: &[(&[u8], &[String])]) -> Result<Begun, Reason> {
        if allow.is_empty() {
            let mut options = DiscoverableCredentialRequestOptions::passkey(&self.rp_id);
            options.0.timeout = self.timeout_ms;
            options.0.user_verification = self.uv();
            let (server, client) = options
                .start_ceremony()
                .map_err(|e| format!("request options: {e}"))?;
            return Ok(Begun {
                challenge: challenge_key(server.sent_challenge()),
                options: json(&client)?,
                state: server.encode().map_err(|e| format!("state: {e}"))?,
            });
        }
        let mut creds = AllowedCredentials::with_capacity(allow.len());
        for (id, t) in allow {
            if let Some(d) = descriptor(id, t) {
                creds.push(AllowedCredential::from(d));
            }
        }
        let mut options =
            NonDiscoverableCredentialRequestOptions::second_factor(&self.rp_id, creds)
                .map_err(|e| format!("request options: {e}"))?;
        options.options().timeout = self.timeout_ms;
        options.options().user_verification = self.uv();
        let (server, client) = options
            .start_ceremony()
            .map_err(|e| format!("request options: {e}"))?;
        Ok(Begun {
            challenge: challenge_key(server.sent_challenge()),
            options: json(&client)?,
            state: server.encode().map_err(|e| format!("state: {e}"))?,
        })
    }

    /// Checks a registration (`RegistrationResponseJSON`) against the state
    /// its begin kept.
    pub fn finish_registration(
        &self,
        state: &[u8],
        response: &[u8],
    ) -> Result<NewCredential, Reason> {
        let server = RegistrationServerState::<16>::decode(state)
            .map_err(|_| "the ceremony's state is unreadable".to_string())?;
        let registration =
            Registration::from_json_relaxed(response).map_err(|e| format!("credential: {e}"))?;
        let options = RegistrationVerificationOptions::<String, String> {
            allowed_origins: &self.origins,
            ..RegistrationVerificationOptions::default()
        };
        let cred = server
            .verify(&self.rp_id, &registration, &options)
            .map_err(|e| registration_reason(&e))?;
        Ok(NewCredential {
            credential_id: cred.id().as_ref().to_vec(),
            public_key: cred
                .static_state()
                .encode()
                .map_err(|e| format!("public key: {e}"))?,
            state: cred
                .dynamic_state()
                .encode()
                .map(|s| s.to_vec())
                .map_err(|e| format!("state: {e}"))?,
            transports: transport_names(cred.transports()),
        })
    }

    /// Checks an assertion (`AuthenticationResponseJSON`) of `stored`
    /// against the state its begin kept.
    pub fn finish_assertion(
        &self,
        discoverable: bool,
        state: &[u8],
        response: &[u8],
        stored: &StoredCredential<'_>,
    ) -> Result<Asserted, Refused> {
        let other = |s: &str| Refused::Other(s.to_string());
        let handle = UserHandle16::from(stored.user_handle);
        let id = CredentialId::<&[u8]>::decode(stored.credential_id)
            .map_err(|_| other("the stored credential is unreadable"))?;
        let static_state =
            StaticState::<CompressedPubKey<[u8; 32], [u8; 32], [u8; 48], Vec<u8>>>::decode(
                stored.public_key,
            )
            .map_err(|_| other("the stored credential is unreadable"))?;
        let dynamic: [u8; 7] = stored
            .state
            .try_into()
            .map_err(|_| other("the stored credential is unreadable"))?;
        let dynamic = DynamicState::decode(dynamic)
            .map_err(|_| other("the stored credential is unreadable"))?;
        let mut cred = AuthenticatedCredential::new(id, &handle, static_state, dynamic)
            .map_err(|e| Refused::Other(format!("credential: {e}")))?;
        let options = AuthenticationVerificationOptions::<String, String> {
            allowed_origins: &self.origins,
            sig_counter_enforcement: SignatureCounterEnforcement::Fail,
            update_uv: true,
            ..AuthenticationVerificationOptions::default()
        };
        let authenticator_data = if discoverable {
            let server = DiscoverableAuthenticationServerState::decode(state)
                .map_err(|_| other("the ceremony's state is unreadable"))?;
            let auth = DiscoverableAuthentication16::from_json_relaxed(response)
                .map_err(|e| Refused::Other(format!("credential: {e}")))?;
            server
                .verify(&self.rp_id, &auth, &mut cred, &options)
                .map_err(|e| assertion_refusal(&e))?;
            auth.response().authenticator_data().to_vec()
        } else {
            let server = NonDiscoverableAuthenticationServerState::decode(state)
                .map_err(|_| other("the ceremony's state is unreadable"))?;
            let auth = NonDiscoverableAuthentication16::from_json_relaxed(response)
                .map_err(|e| Refused::Other(format!("credential: {e}")))?;
            server
                .verify(&self.rp_id, &auth, &mut cred, &options)
                .map_err(|e| assertion_refusal(&e))?;
            auth.response().authenticator_data().to_vec()
        };
        let user_verified = AuthenticatorData::try_from(authenticator_data.as_slice())
            .map(|d| d.flags().user_verified)
            .map_err(|_| other("authenticator data unreadable"))?;
        Ok(Asserted {
            state: cred
                .dynamic_state()
                .encode()
                .map(|s| s.to_vec())
                .map_err(|e| Refused::Other(format!("state: {e}")))?,
            user_verified,
        })
    }
}

/// The challenge a registration answers, to find its ceremony.
pub fn registration_challenge(response: &[u8]) -> Result<String, Reason> {
    Registration::from_json_relaxed(response)
        .map_err(|e| format!("credential: {e}"))?
        .challenge_relaxed()
        .map(challenge_key)
        .map_err(|e| format!("credential: {e}"))
}

/// What an assertion claims (challenge, credential, user), to find its
/// ceremony and its credential before it is checked.
pub fn assertion_claims(response: &[u8]) -> Result<AssertionClaims, Reason> {
    let auth = NonDiscoverableAuthentication16::from_json_relaxed(response)
        .map_err(|e| format!("credential: {e}"))?;
    let challenge = auth
        .challenge_relaxed()
        .map(challenge_key)
        .map_err(|e| format!("credential: {e}"))?;
    let user_handle = auth.response().user_handle().map(|h| {
        let mut out = [0u8; 16];
        out.copy_from_slice(h.as_ref());
        out
    });
    Ok(AssertionClaims {
        challenge,
        credential_id: auth.raw_id().as_ref().to_vec(),
        user_handle,
    })
}

fn registration_reason(e: &RegCeremonyErr) -> Reason {
    match e {
        RegCeremonyErr::OriginMismatch => "origin not allowed".into(),
        RegCeremonyErr::RpIdHashMismatch => "relying party id mismatch".into(),
        RegCeremonyErr::ChallengeMismatch => "challenge mismatch".into(),
        RegCeremonyErr::Timeout => "challenge expired".into(),
        RegCeremonyErr::UserNotVerified => "user verification required".into(),
        other => other.to_string(),
    }
}

fn assertion_refusal(e: &AuthCeremonyErr) -> Refused {
    Refused::Other(match e {
        AuthCeremonyErr::SignatureCounter => return Refused::CounterRegressed,
        AuthCeremonyErr::OriginMismatch => "origin not allowed".into(),
        AuthCeremonyErr::RpIdHashMismatch => "relying party id mismatch".into(),
        AuthCeremonyErr::ChallengeMismatch => "challenge mismatch".into(),
        AuthCeremonyErr::Timeout => "challenge expired".into(),
        AuthCeremonyErr::AssertionSignature => "signature invalid".into(),
        AuthCeremonyErr::UserNotVerified => "user verification required".into(),
        AuthCeremonyErr::UserHandleMismatch => "the passkey is not this user's".into(),
        AuthCeremonyErr::CredentialIdMismatch | AuthCeremonyErr::NoMatchingAllowedCredential => {
            "the passkey was not offered for this ceremony".into()
        }
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rp() -> RelyingParty {
        let cfg = PasskeysSection {
            rp_id: "example.com".into(),
            ..PasskeysSection::default()
        };
        RelyingParty::new(&cfg).unwrap().unwrap()
    }

    #[test]
    fn off_without_an_rp_id_and_no_ip_as_rp_id() {
        assert!(
            RelyingParty::new(&PasskeysSection::default())
                .unwrap()
                .is_none()
        );
        let ip = PasskeysSection {
            rp_id: "127.0.0.1".into(),
            ..PasskeysSection::default()
        };
        assert!(RelyingParty::new(&ip).is_err());
    }

    #[test]
    fn creation_options_name_the_rp_the_user_and_what_to_exclude() {
        let transports = vec!["usb".to_string()];
        let held: &[(&[u8], &[String])] = &[(&[7u8; 16], &transports)];
        let begun = rp()
            .begin_registration([1; 16], "a@example.com", "A", held)
            .unwrap();
        let o = &begun.options;
        assert_eq!(o["rp"]["id"], "example.com");
        assert_eq!(o["user"]["id"], "AQEBAQEBAQEBAQEBAQEBAQ");
        assert_eq!(o["user"]["name"], "a@example.com");
        assert_eq!(o["excludeCredentials"][0]["transports"][0], "usb");
        assert_eq!(o["authenticatorSelection"]["residentKey"], "preferred");
        assert_eq!(o["authenticatorSelection"]["userVerification"], "preferred");
        assert_eq!(o["timeout"], 120_000);
        assert_eq!(begun.challenge.len(), 32);
        assert!(!begun.state.is_empty());
    }

    #[test]
    fn request_options_are_discoverable_unless_credentials_are_allowed() {
        let any = rp().begin_assertion(&[]).unwrap();
        assert!(
            any.options
                .get("allowCredentials")
                .is_none_or(|a| a.as_array().is_some_and(Vec::is_empty))
        );
        let none: &[String] = &[];
        let some = rp().begin_assertion(&[(&[3u8; 16], none)]).unwrap();
        assert_eq!(
            some.options["allowCredentials"].as_array().unwrap().len(),
            1
        );
        assert_ne!(any.challenge, some.challenge);
    }

    #[test]
    fn an_answer_that_is_not_a_credential_is_refused_with_a_reason() {
        assert!(registration_challenge(b"{}").is_err());
        assert!(assertion_claims(br#"{"id":"AA"}"#).is_err());
    }
}
