export * from './xattr.ts';
export * from './view.ts';
export * from './analyze.ts';
