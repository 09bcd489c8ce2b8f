//! ISA names, detection and the DGMS_QSIMD override.

use dgms_qsimd::kernels::{Isa, ISA_ENV_VAR};
use dgms_qsimd::QsimdError;

#[test]
fn names_round_trip() {
    for isa in Isa::ALL {
        assert_eq!(isa.to_string().parse::<Isa>().unwrap(), isa);
        assert_eq!(isa.to_string().to_uppercase().parse::<Isa>().unwrap(), isa);
    }
    assert_eq!(" avx-512 ".parse::<Isa>().unwrap(), Isa::Avx512);
    let err = "sse9".parse::<Isa>().unwrap_err();
    assert!(matches!(err, QsimdError::UnknownIsa { .. }));
    assert!(err.to_string().contains("sse9"), "{err}");
}

#[test]
fn detect_is_best_available() {
    let avail = Isa::available();
    assert_eq!(avail[0], Isa::Scalar);
    assert_eq!(Isa::detect(), *avail.last().unwrap());
    #[cfg(target_arch = "x86_64")]
    assert!(!Isa::Neon.is_available());
    #[cfg(target_arch = "aarch64")]
    assert!(Isa::Neon.is_available() && !Isa::Avx2.is_available());
    eprintln!(
        "available kernel ISAs: {avail:?}, detected {}",
        Isa::detect()
    );
}

#[test]
fn choice_parsing() {
    assert_eq!(Isa::from_choice(None).unwrap(), Isa::detect());
    assert_eq!(Isa::from_choice(Some("")).unwrap(), Isa::detect());
    assert_eq!(Isa::from_choice(Some("AUTO")).unwrap(), Isa::detect());
    assert_eq!(Isa::from_choice(Some("scalar")).unwrap(), Isa::Scalar);
    for isa in Isa::ALL {
        match Isa::from_choice(Some(isa.name())) {
            Ok(got) => assert!(isa.is_available() && got == isa),
            Err(e) => {
                assert!(!isa.is_available());
                assert!(matches!(e, QsimdError::IsaUnavailable { .. }), "{e}");
                assert!(e.to_string().contains(isa.name()), "{e}");
            }
        }
    }
    assert!(matches!(
        Isa::from_choice(Some("avx1024")),
        Err(QsimdError::UnknownIsa { .. })
    ));
}

/// The only test in this binary that touches the environment, so no other
/// test can observe the variable changing.
#[test]
fn from_env_reads_the_variable() {
    std::env::set_var(ISA_ENV_VAR, "scalar");
    assert_eq!(Isa::from_env().unwrap(), Isa::Scalar);
    std::env::set_var(ISA_ENV_VAR, "auto");
    assert_eq!(Isa::from_env().unwrap(), Isa::detect());
    std::env::set_var(ISA_ENV_VAR, "bogus");
    assert!(matches!(
        Isa::from_env(),
        Err(QsimdError::UnknownIsa { .. })
    ));
    if let Some(missing) = Isa::ALL.into_iter().find(|i| !i.is_available()) {
        std::env::set_var(ISA_ENV_VAR, missing.name());
        let e = Isa::from_env().unwrap_err();
        assert!(e.to_string().contains(missing.name()), "{e}");
    }
    std::env::remove_var(ISA_ENV_VAR);
    assert_eq!(Isa::from_env().unwrap(), Isa::detect());
}
