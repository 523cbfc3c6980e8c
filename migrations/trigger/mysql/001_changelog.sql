-- cdc-agent trigger capture for MySQL 8 / MariaDB 10.5+, version 1: the changelog and the version table.
-- The reader emits rows in id order and tracks gaps (an id taken by a transaction that has not committed
-- yet, or by one that rolled back) with a bounded wait; rows are deleted only after the agent spooled them.
-- AUTO_INCREMENT starts at the install time in microseconds so that ids never repeat after a new setup;
-- the counter must survive a server restart (MySQL 8.0+, MariaDB 10.2.4+).
CREATE TABLE {{qversion}} (
    version    INT NOT NULL PRIMARY KEY,
    name       VARCHAR(200) NOT NULL,
    applied_at DATETIME(6) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4
;
CREATE TABLE {{qcl}} (
    id         BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    session_id BIGINT UNSIGNED NOT NULL,
    tbl        VARCHAR(200) NOT NULL,
    op         CHAR(1) NOT NULL,
    `before`   LONGTEXT,
    `after`    LONGTEXT,
    created    DATETIME(6) NOT NULL
) ENGINE=InnoDB AUTO_INCREMENT={{seed}} DEFAULT CHARSET=utf8mb4
;
-- The start marker: the first id. A reader that starts without a checkpoint knows from it that every
-- later id is a change, so a transaction still open at its start is waited for like any gap.
INSERT INTO {{qcl}} (session_id, tbl, op, created) VALUES (CONNECTION_ID(), '', 'S', UTC_TIMESTAMP(6))
