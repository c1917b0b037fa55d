-- One database per owner (DESIGN.md "Data ownership"); each process migrates its own at start.
CREATE DATABASE monolith;
CREATE DATABASE user_svc;
CREATE DATABASE order_svc;
CREATE DATABASE payment_svc;
CREATE DATABASE notification_svc;
