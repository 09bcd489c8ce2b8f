//! Parsing data-source strings.

use std::path::PathBuf;

use dgms_data::source::DEBIAN_FASHION_MNIST;
use dgms_data::{DataError, DataSource, DatasetKind};

#[test]
fn accepted_forms() {
    let p = |s: &str| s.parse::<DataSource>().unwrap();
    assert_eq!(p("embedded"), DataSource::Embedded);
    assert_eq!(p(" embedded "), DataSource::Embedded);
    assert_eq!(
        p("fashion-mnist:/data/fm"),
        DataSource::FashionMnist(PathBuf::from("/data/fm"))
    );
    assert_eq!(
        p("mnist:rel/dir"),
        DataSource::Mnist(PathBuf::from("rel/dir"))
    );
    assert_eq!(
        p("cifar10:/x:y"),
        DataSource::Cifar10(PathBuf::from("/x:y"))
    );
    assert_eq!(p("mnist:d").kind(), Some(DatasetKind::Mnist));
    assert_eq!(p("cifar10:d").kind(), Some(DatasetKind::Cifar10));
    assert_eq!(
        p("imagenet:/data/in"),
        DataSource::ImageNet(PathBuf::from("/data/in"))
    );
    assert_eq!(
        p("folder:/cub/train,/cub/test"),
        DataSource::Folder {
            train: PathBuf::from("/cub/train"),
            val: PathBuf::from("/cub/test")
        }
    );
    assert_eq!(p("imagenet:d").kind(), None);
    assert!(p("folder:a,b").is_image_folder());
    for s in [
        "embedded",
        "fashion-mnist:/a",
        "mnist:b",
        "cifar10:/c/d",
        "imagenet:/e",
        "folder:/f,g",
    ] {
        assert_eq!(p(s).to_string(), s);
        assert_eq!(p(&p(s).to_string()), p(s));
    }
}

#[test]
fn fashion_mnist_default_folder() {
    let parsed = "fashion-mnist".parse::<DataSource>();
    if std::path::Path::new(DEBIAN_FASHION_MNIST).is_dir() {
        assert_eq!(
            parsed.unwrap(),
            DataSource::FashionMnist(PathBuf::from(DEBIAN_FASHION_MNIST))
        );
    } else {
        let msg = parsed.unwrap_err().to_string();
        assert!(
            msg.contains(DEBIAN_FASHION_MNIST) && msg.contains("fashion-mnist:DIR"),
            "{msg}"
        );
    }
}

#[test]
fn unknown_and_incomplete_forms() {
    let err = "coco:/data".parse::<DataSource>().unwrap_err();
    assert!(matches!(err, DataError::UnknownSource { .. }));
    let msg = err.to_string();
    assert!(msg.contains("`coco:/data`"), "{msg}");
    for form in [
        "embedded",
        "fashion-mnist:DIR",
        "mnist:DIR",
        "cifar10:DIR",
        "imagenet:DIR",
        "folder:TRAIN_DIR,VAL_DIR",
    ] {
        assert!(msg.contains(form), "{msg} lacks {form}");
    }
    let msg = "mnist".parse::<DataSource>().unwrap_err().to_string();
    assert!(msg.contains("`mnist` needs a folder: `mnist:DIR`"), "{msg}");
    let msg = "cifar10:".parse::<DataSource>().unwrap_err().to_string();
    assert!(msg.contains("`cifar10:DIR`"), "{msg}");
    let msg = "embedded:/x".parse::<DataSource>().unwrap_err().to_string();
    assert!(msg.contains("DGMS_EMBEDDED_DATA"), "{msg}");
    assert!("".parse::<DataSource>().is_err());
    assert!("Embedded".parse::<DataSource>().is_err());
}

#[test]
fn folder_sources_need_their_folders() {
    for (given, expected) in [
        ("imagenet", "imagenet:DIR"),
        ("folder", "folder:TRAIN_DIR,VAL_DIR"),
        ("folder:only-one", "folder:TRAIN_DIR,VAL_DIR"),
        ("folder:a,", "folder:TRAIN_DIR,VAL_DIR"),
    ] {
        let err = given.parse::<DataSource>().unwrap_err().to_string();
        assert!(err.contains(expected), "{given}: {err}");
    }
}
