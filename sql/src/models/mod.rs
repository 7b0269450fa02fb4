pub mod als;
