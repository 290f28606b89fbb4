/**
 * Says once, at the top of a test run, whether the PostgreSQL suites run. They need a server:
 * `npm run test:pg` starts a throwaway cluster and runs the whole suite against it.
 */
export default function setup (): void {
  if (process.env.TEST_DATABASE_URL === undefined || process.env.TEST_DATABASE_URL === '') {
    process.stdout.write('\nPostgreSQL suite skipped: TEST_DATABASE_URL is not set (npm run test:pg starts a throwaway cluster and runs it).\n\n')
  } else {
    process.stdout.write(`\nPostgreSQL suite runs against ${process.env.TEST_DATABASE_URL.replace(/\/\/[^@]*@/, '//')}\n\n`)
  }
}
